-- 0001: events, agents registry, dropped ranges, floor raises, quarantine.
-- Instants are UTC milliseconds since the Unix epoch (INTEGER).

-- Every event, once per (agent_id, seq). `payload` is the event as JSON,
-- exactly as the wire defines it (seq, at, type and the type's fields).
CREATE TABLE events (
    agent_id       TEXT    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq > 0),
    instrument_id  TEXT    NOT NULL,
    at_ms          INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;

CREATE INDEX events_by_instrument_time ON events (instrument_id, at_ms);

-- One row per agent that ever sent an envelope or a status.
CREATE TABLE agents (
    agent_id             TEXT PRIMARY KEY NOT NULL,
    instrument_id        TEXT,
    first_seen_ms        INTEGER NOT NULL,
    last_seen_ms         INTEGER NOT NULL,
    -- From the retained status topic: 'online' | 'offline' (NULL: never said).
    presence             TEXT CHECK (presence IN ('online', 'offline')),
    presence_at_ms       INTEGER,
    version              TEXT,
    -- From the newest heartbeat event.
    heartbeat_at_ms      INTEGER,
    backlog              INTEGER,
    oldest_unacked_age_s INTEGER,
    -- Receive time minus the newest envelope's sent_at (positive: agent clock behind).
    clock_skew_ms        INTEGER,
    -- The first envelope's acked_through, raised by later floor raises.
    acked_floor          INTEGER,
    -- Every seq in acked_floor+1 ..= committed_through is stored or dropped.
    -- NULL until the first envelope.
    committed_through    INTEGER
) WITHOUT ROWID;

-- Ranges named by stored `dropped` events: closed without an event row.
CREATE TABLE dropped_ranges (
    agent_id   TEXT    NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    -- The seq of the `dropped` event that named the range.
    event_seq  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, first_seq, last_seq)
) WITHOUT ROWID;

-- An agent's acked_through went past this collector's committed_through:
-- seqs skipped_first..=skipped_last were acknowledged by some collector
-- (e.g. before this database was reset) and will never arrive here.
CREATE TABLE floor_raises (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id       TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    skipped_first  INTEGER NOT NULL,
    skipped_last   INTEGER NOT NULL
);

-- Payloads that were not accepted. `payload` keeps at most the first 64 KiB;
-- `payload_len` is the original length.
CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    topic          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    payload_len    INTEGER NOT NULL
);
