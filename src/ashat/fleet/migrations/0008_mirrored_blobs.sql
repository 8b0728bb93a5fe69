-- Blobs OMEGA has copied to an S3 mirror (--blob-mirror s3://…, fleet/s3_copy.py), by the
-- mirror's name (endpoint, bucket, prefix): only these are redirected there; the others
-- OMEGA sends itself until they are copied.
CREATE TABLE IF NOT EXISTS mirrored_blobs (
    mirror TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (mirror, sha256)
);
