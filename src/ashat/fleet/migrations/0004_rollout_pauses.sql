-- A running rollout an operator paused (deploy pause): no wave starts, no new directive
-- goes out and no wave times out until it is resumed. One row while paused.
CREATE TABLE IF NOT EXISTS rollout_pauses (
    rollout_id TEXT PRIMARY KEY REFERENCES rollouts (rollout_id),
    paused_at  TEXT NOT NULL,
    reason     TEXT
);
