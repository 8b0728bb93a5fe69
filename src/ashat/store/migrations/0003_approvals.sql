-- Approvals of a verified deployment; one row per approver (approving twice counts once).
CREATE TABLE approvals (
    deployment_id  TEXT NOT NULL,
    approver       TEXT NOT NULL,
    at             TEXT NOT NULL,
    comment        TEXT,
    PRIMARY KEY (deployment_id, approver)
);
