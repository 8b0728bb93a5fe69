-- Every passed Performance Baseline run's p95, per tier and path (issue 18). A run is
-- judged against the median of the last few of them, so one noisy run neither fails the
-- next release nor moves what it is judged against. The single stored value it replaces
-- becomes the first run of each history.
CREATE TABLE baseline_runs (
    tier           TEXT NOT NULL,
    path           TEXT NOT NULL,
    p95_ms         DOUBLE PRECISION NOT NULL,
    deployment_id  TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (tier, path, at, deployment_id)
);
INSERT INTO baseline_runs (tier, path, p95_ms, deployment_id, at)
    SELECT tier, path, p95_ms, deployment_id, at FROM baselines;
DROP TABLE baselines;
