-- Verification results (one row per check per run) and performance baselines.
CREATE TABLE check_results (
    deployment_id  TEXT NOT NULL,
    run            INTEGER NOT NULL,
    name           TEXT NOT NULL,
    title          TEXT NOT NULL,
    status         TEXT NOT NULL,
    summary        TEXT NOT NULL,
    details        TEXT NOT NULL,
    duration_s     DOUBLE PRECISION NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (deployment_id, run, name)
);

-- The p95 of the last passed Performance Baseline run, per tier and path.
CREATE TABLE baselines (
    tier           TEXT NOT NULL,
    path           TEXT NOT NULL,
    p95_ms         DOUBLE PRECISION NOT NULL,
    deployment_id  TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (tier, path)
);
