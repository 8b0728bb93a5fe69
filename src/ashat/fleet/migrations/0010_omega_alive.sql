-- When an OMEGA replica last said it was running while rollouts ran (one row, any
-- replica's write): a replica that starts gives running waves their whole timeout again
-- only if no replica was alive for a while (Omega._resume_rollouts), so that a replica
-- starting beside others, or one restarting in a loop, does not stop waves from timing out.
CREATE TABLE IF NOT EXISTS omega_alive (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at DOUBLE PRECISION NOT NULL
);
