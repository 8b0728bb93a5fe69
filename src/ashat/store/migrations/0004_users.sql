-- Users of the control-plane API (ashat serve): a role each, and the sha256 of their API
-- token (the token itself is shown once and never stored). NULL: no token issued yet.
CREATE TABLE users (
    name              TEXT PRIMARY KEY,
    role              TEXT NOT NULL,
    token_hash        TEXT,
    token_issued_at   TEXT,
    created_at        TEXT NOT NULL,
    created_by        TEXT NOT NULL
);
CREATE UNIQUE INDEX users_token ON users (token_hash);
