-- Dashboard sessions ended by signing out (ashat serve), kept until they would have expired
-- anyway, so that a copy of the cookie is refused from then on. `id` is the sha256 of the
-- session's CSRF token; `expires_at` is in seconds since the epoch.
CREATE TABLE ended_sessions (
    id          TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
