-- The fleet's schema as fleet.db had it before migrations (CREATE ... IF NOT EXISTS), so an
-- existing fleet.db takes the later ones in place. {auto_key}: the dialect's auto-numbered key.
CREATE TABLE IF NOT EXISTS mainframes (
    mainframe_id   TEXT PRIMARY KEY,
    license_id     TEXT NOT NULL,
    customer       TEXT NOT NULL,
    channels       TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    current        TEXT,
    sequence       BIGINT,
    last_seen      TEXT NOT NULL,
    license_status TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS approvals (
    n               {auto_key},
    update_id       TEXT NOT NULL UNIQUE,
    sequence        BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL,
    approval_keyid  TEXT NOT NULL,
    record          TEXT NOT NULL,
    signed_at       TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS approved_blobs (
    sha256 TEXT PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS revocations (
    license_id TEXT PRIMARY KEY,
    at         TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS rollouts (
    n                   {auto_key},
    rollout_id          TEXT NOT NULL UNIQUE,
    kind                TEXT NOT NULL,
    update_id           TEXT NOT NULL,
    from_update_id      TEXT,
    channel             TEXT NOT NULL,
    waves               TEXT NOT NULL,
    max_failure_ratio   DOUBLE PRECISION NOT NULL,
    wave_timeout_s      DOUBLE PRECISION NOT NULL,
    auto_rollback       INTEGER NOT NULL,
    state               TEXT NOT NULL,
    reason              TEXT,
    current_wave        INTEGER NOT NULL,
    wave_started_at     DOUBLE PRECISION NOT NULL,
    rollback_rollout_id TEXT,
    parent_rollout_id   TEXT,
    created_at          TEXT NOT NULL,
    finished_at         TEXT
);

CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts (state);

CREATE TABLE IF NOT EXISTS rollout_targets (
    rollout_id   TEXT NOT NULL REFERENCES rollouts (rollout_id),
    mainframe_id TEXT NOT NULL,
    wave         INTEGER NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    reported_at  TEXT,
    PRIMARY KEY (rollout_id, mainframe_id)
);

CREATE INDEX IF NOT EXISTS targets_mainframe ON rollout_targets (mainframe_id, status);
