-- 0004: browser sessions of the dashboard (docs/dashboard.md).
-- The cookie holds a random secret; only its SHA-256 is stored, so a copy
-- of the database does not let anyone in. Logging out deletes the row;
-- removing or replacing the token a session was opened with ends it too
-- (checked on every request against the token's SHA-256).
CREATE TABLE dashboard_sessions (
    id_sha256     TEXT    PRIMARY KEY NOT NULL,
    -- The name of the API token exchanged for this session.
    token_name    TEXT    NOT NULL,
    -- Its SHA-256 (hex), as in [[http.tokens]]: a new secret under the same
    -- name ends the sessions opened with the old one.
    token_sha256  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'evaluator')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
