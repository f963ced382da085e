-- 0007: the InfluxDB sink's durable cursors (docs/influxdb.md). The sink
-- reads what to send from the store; nothing here holds evidence.

-- Per agent: every event up to this seq was taken by the server (or set aside).
CREATE TABLE influx_cursor (
    agent_id         TEXT PRIMARY KEY NOT NULL,
    exported_through INTEGER NOT NULL
) WITHOUT ROWID;

-- Verified days written since they were last sent. A trigger on
-- day_totals (created while the sink is on) fills it; `version` tells
-- whether a day was written again while it was being sent.
CREATE TABLE influx_days (
    instrument_id TEXT    NOT NULL,
    start_ms      INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (instrument_id, start_ms)
) WITHOUT ROWID;

-- Batches the server refused as malformed (400, 422), with its message and
-- the first 64 KiB of the body, for an operator.
CREATE TABLE influx_rejected (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    message  TEXT    NOT NULL,
    points   INTEGER NOT NULL,
    body     BLOB    NOT NULL,
    body_len INTEGER NOT NULL
);
