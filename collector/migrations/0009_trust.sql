-- 0009: agents' signing keys and the per-event hash chain (issue 14,
-- docs/design/trust.md).

-- Enrolled public keys (`labhours-collector agents enrol`). `key_id` is the
-- first 8 bytes of SHA-256 of the key, hex; `public_key` is written
-- `ed25519:<hex>`. A revoked key stays listed; envelopes signed with it
-- are quarantined from `revoked_at_ms` on.
CREATE TABLE agent_keys (
    key_id         TEXT    NOT NULL PRIMARY KEY,
    agent_id       TEXT    NOT NULL,
    public_key     TEXT    NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);
CREATE INDEX agent_keys_by_agent ON agent_keys (agent_id);

-- Each event's chain hash h(n) = SHA-256(h(n-1) || event bytes), 32 bytes,
-- NULL for events from version 1 envelopes; `signed` = 1 when the envelope
-- that brought it was signed by an enrolled key (0 for older rows).
ALTER TABLE events ADD COLUMN chain_hash BLOB;
ALTER TABLE events ADD COLUMN signed INTEGER NOT NULL DEFAULT 0;
-- Hours answers mark periods with unsigned events; only those are indexed.
CREATE INDEX events_unsigned ON events (instrument_id, at_ms) WHERE signed = 0;

-- Where the collector took an agent's `prev` on trust because it had no
-- hash for the seq before (first contact, a dropped range, events from
-- before the chain): `prev_hash` is h(seq - 1) as the agent signed it.
CREATE TABLE chain_anchors (
    agent_id       TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    prev_hash      BLOB    NOT NULL,
    key_id         TEXT,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;

-- The evidence: every signed envelope that brought new events, exactly as
-- received (JSON, newline, hex signature).
CREATE TABLE signed_envelopes (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    first_seq      INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    payload        BLOB    NOT NULL
);
CREATE INDEX signed_envelopes_by_agent ON signed_envelopes (agent_id, first_seq);
