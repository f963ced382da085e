-- 0011: per-agent credentials for the embedded MQTT broker (issue 14,
-- docs/design/trust.md#transport).

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
