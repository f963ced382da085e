-- 0011: per-agent credentials for the embedded MQTT broker, and keys an
-- agent rotated to by itself (issue 14, docs/design/trust.md#transport,
-- #rotation).

-- One password per agent (`labhours-collector agents credential`), kept only
-- as the SHA-256 of its text: it is 32 random bytes, so a fast hash is
-- enough (nothing to brute-force). The broker checks CONNECT against this
-- table when `[mqtt] require_credentials` is on; issuing again replaces the
-- row, so the old password stops working at the agent's next connect.
CREATE TABLE broker_credentials (
    agent_id      TEXT    NOT NULL PRIMARY KEY,
    secret_sha256 BLOB    NOT NULL,
    issued_at_ms  INTEGER NOT NULL
);

-- A key enrolled on its predecessor's signed word (the agent rotated):
-- the predecessor's key id. NULL for keys an admin enrolled. A key endorses
-- at most one successor.
ALTER TABLE agent_keys ADD COLUMN rotated_from TEXT;
CREATE UNIQUE INDEX agent_keys_rotated_from ON agent_keys (rotated_from)
    WHERE rotated_from IS NOT NULL;
