-- A running rollout an operator paused (deploy pause): no wave starts, no new directive
-- goes out and no wave times out until it is resumed. One row while paused.
CREATE TABLE IF NOT EXISTS rollout_pauses (
    rollout_id TEXT PRIMARY KEY REFERENCES rollouts (rollout_id),
    paused_at  TEXT NOT NULL,
    reason     TEXT
);

-- Manual gates between waves ([distribution] waves = [10, "pause", 100]): after wave
-- `wave` is done the rollout pauses instead of starting the next; `passed` once resumed.
CREATE TABLE IF NOT EXISTS rollout_gates (
    rollout_id TEXT NOT NULL REFERENCES rollouts (rollout_id),
    wave       INTEGER NOT NULL,
    passed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, wave)
);

-- What each mainframe said of its app at its last poll: none, healthy, unhealthy,
-- restarting or crash_loop, and how often the agent restarted it (issue 17).
ALTER TABLE mainframes ADD COLUMN app_status TEXT;
ALTER TABLE mainframes ADD COLUMN app_restarts INTEGER;
