-- What the controller did, one row per wave started and per end: replicas leave one
-- trail, and "each wave started once" can be checked.
CREATE TABLE IF NOT EXISTS rollout_events (
    n          {auto_key},
    rollout_id TEXT NOT NULL REFERENCES rollouts (rollout_id),
    event      TEXT NOT NULL,
    wave       INTEGER,
    at         TEXT NOT NULL,
    replica    TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS rollout_events_rollout ON rollout_events (rollout_id, n);
