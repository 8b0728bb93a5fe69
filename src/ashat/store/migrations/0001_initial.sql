-- The control store: configured servers, deployments, tier leases and the audit chain.
CREATE TABLE servers (
    tier        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    token_path  TEXT,
    ca_cert     TEXT,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL
);

CREATE TABLE deployments (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    reason       TEXT,
    details      TEXT NOT NULL
);
CREATE INDEX deployments_updated ON deployments (updated_at);
CREATE INDEX deployments_state ON deployments (state);

-- Append-only and hash-chained: hash = sha256(prev_hash || canonical_json(event)).
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    deployment_id  TEXT,
    kind           TEXT NOT NULL,
    actor          TEXT NOT NULL,
    at             TEXT NOT NULL,
    details        TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX events_deployment ON events (deployment_id, seq);

-- The chain head, one row; appends lock it so concurrent writers serialize.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE leases (
    tier           TEXT PRIMARY KEY,
    deployment_id  TEXT NOT NULL,
    owner          TEXT NOT NULL,
    acquired_at    TEXT NOT NULL,
    expires_at     TEXT NOT NULL
);
