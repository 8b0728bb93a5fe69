-- Bake time and metric analysis between waves ([distribution] bake_s, [[distribution.analysis]];
-- ashat/bake.py): the policy a rollout was started with, one row per rollout that has one.
CREATE TABLE IF NOT EXISTS rollout_bake_policies (
    rollout_id TEXT PRIMARY KEY REFERENCES rollouts (rollout_id),
    policy     TEXT NOT NULL            -- BakePolicy.to_json()
);

-- Each wave's bake: when it started (every mainframe of the wave installed), when it passed,
-- and OMEGA's last evaluation of the analysis queries (Evaluation.to_json()).
CREATE TABLE IF NOT EXISTS rollout_bakes (
    rollout_id TEXT NOT NULL REFERENCES rollouts (rollout_id),
    wave       INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    passed_at  DOUBLE PRECISION,
    last       TEXT,
    PRIMARY KEY (rollout_id, wave)
);
