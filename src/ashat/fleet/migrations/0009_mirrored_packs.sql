-- Release packs OMEGA has copied to an S3 mirror (--blob-mirror s3://…, fleet/s3_copy.py),
-- by the mirror's name and the release's manifest digest: only these are redirected there.
CREATE TABLE IF NOT EXISTS mirrored_packs (
    mirror TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (mirror, digest)
);
