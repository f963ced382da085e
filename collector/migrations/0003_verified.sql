-- 0003: what reconciliation reads (derived from events at commit) and what
-- it writes (verified results). Instants are UTC milliseconds (INTEGER).
-- Everything here except `corrections` can be rebuilt from `events`,
-- `bookings` and `corrections` (`labhours-collector rebuild`).

-- Transitions, one row per transition event: the state timeline.
CREATE TABLE transitions (
    instrument_id TEXT    NOT NULL,
    at_ms         INTEGER NOT NULL,
    agent_id      TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    PRIMARY KEY (instrument_id, at_ms, agent_id, seq)
) WITHOUT ROWID;

-- Result files, one row per result_file event.
CREATE TABLE result_files (
    instrument_id TEXT    NOT NULL,
    mtime_ms      INTEGER NOT NULL,
    agent_id      TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    path          TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    sample_id     TEXT,
    PRIMARY KEY (instrument_id, mtime_ms, agent_id, seq)
) WITHOUT ROWID;

-- Energy of the summaries, per instrument and UTC hour (by summary start).
CREATE TABLE energy_hours (
    instrument_id TEXT    NOT NULL,
    hour_ms       INTEGER NOT NULL,
    wh            REAL    NOT NULL,
    PRIMARY KEY (instrument_id, hour_ms)
) WITHOUT ROWID;

-- When an instrument's agents gave signs of life: every event instant
-- (a summary's end too), joined while less than 120 s apart. Silence
-- longer than the instrument's silence_after_s is `unknown`.
CREATE TABLE alive_spans (
    instrument_id TEXT    NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL,
    PRIMARY KEY (instrument_id, start_ms)
) WITHOUT ROWID;

-- Instruments whose results are stale from from_ms on (new events,
-- bookings or corrections). Cleared by the reconciler.
-- `version` counts the marks, so a rebuild can tell whether one came in
-- after it read the instrument.
CREATE TABLE dirty (
    instrument_id TEXT PRIMARY KEY NOT NULL,
    from_ms       INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;

-- Admin corrections (§7): never edited, never deleted.
CREATE TABLE corrections (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instrument_id  TEXT    NOT NULL,
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL CHECK (end_ms > start_ms),
    user           TEXT,
    group_name     TEXT,
    usage_type     TEXT,
    booking_id     TEXT,
    reason         TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX corrections_by_instrument_time ON corrections (instrument_id, start_ms);

-- Per instrument: the policy its results were computed with.
CREATE TABLE reconciled (
    instrument_id TEXT PRIMARY KEY NOT NULL,
    policy_hash   TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Verified totals per instrument and local day (its zone), in ms.
-- `c_*` are the corrected usage-type figures; `assigned_ms` is unbooked
-- usage an admin assigned.
CREATE TABLE day_totals (
    instrument_id   TEXT    NOT NULL,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    month           TEXT    NOT NULL,  -- local 'YYYY-MM'
    used_ms         INTEGER NOT NULL,
    booked_ms       INTEGER NOT NULL,
    booked_used_ms  INTEGER NOT NULL,
    unbooked_ms     INTEGER NOT NULL,
    teaching_ms     INTEGER NOT NULL,
    research_ms     INTEGER NOT NULL,
    external_ms     INTEGER NOT NULL,
    training_ms     INTEGER NOT NULL,
    maintenance_ms  INTEGER NOT NULL,
    unassigned_ms   INTEGER NOT NULL,
    assigned_ms     INTEGER NOT NULL,
    c_teaching_ms   INTEGER NOT NULL,
    c_research_ms   INTEGER NOT NULL,
    c_external_ms   INTEGER NOT NULL,
    c_training_ms   INTEGER NOT NULL,
    c_maintenance_ms INTEGER NOT NULL,
    c_unassigned_ms INTEGER NOT NULL,
    no_show_count   INTEGER NOT NULL,
    fault_ms        INTEGER NOT NULL,
    unknown_ms      INTEGER NOT NULL,
    result_files    INTEGER NOT NULL,
    energy_wh       REAL,
    PRIMARY KEY (instrument_id, start_ms)
) WITHOUT ROWID;
-- Reports per day across the fleet.
CREATE INDEX day_totals_by_start ON day_totals (start_ms);

-- The same summed per local month, kept in step with day_totals.
CREATE TABLE month_totals (
    instrument_id   TEXT    NOT NULL,
    month           TEXT    NOT NULL,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    -- Length of the days summed (days without a row are all unknown).
    covered_ms      INTEGER NOT NULL,
    used_ms         INTEGER NOT NULL,
    booked_ms       INTEGER NOT NULL,
    booked_used_ms  INTEGER NOT NULL,
    unbooked_ms     INTEGER NOT NULL,
    teaching_ms     INTEGER NOT NULL,
    research_ms     INTEGER NOT NULL,
    external_ms     INTEGER NOT NULL,
    training_ms     INTEGER NOT NULL,
    maintenance_ms  INTEGER NOT NULL,
    unassigned_ms   INTEGER NOT NULL,
    assigned_ms     INTEGER NOT NULL,
    c_teaching_ms   INTEGER NOT NULL,
    c_research_ms   INTEGER NOT NULL,
    c_external_ms   INTEGER NOT NULL,
    c_training_ms   INTEGER NOT NULL,
    c_maintenance_ms INTEGER NOT NULL,
    c_unassigned_ms INTEGER NOT NULL,
    no_show_count   INTEGER NOT NULL,
    fault_ms        INTEGER NOT NULL,
    unknown_ms      INTEGER NOT NULL,
    result_files    INTEGER NOT NULL,
    energy_wh       REAL,
    PRIMARY KEY (instrument_id, month)
) WITHOUT ROWID;
CREATE INDEX month_totals_by_start ON month_totals (start_ms);

-- §5 report per booking, as of the last reconciliation.
CREATE TABLE booking_outcomes (
    booking_id     TEXT    NOT NULL,
    instrument_id  TEXT    NOT NULL,
    start_ms       INTEGER NOT NULL,
    outcome        TEXT    NOT NULL,
    flags          TEXT    NOT NULL,  -- names joined by ','
    booked_s       REAL    NOT NULL,
    used_s         REAL    NOT NULL,
    early_s        REAL    NOT NULL,
    overrun_s      REAL    NOT NULL,
    first_use_ms   INTEGER,
    last_use_ms    INTEGER,
    unknown_s      REAL    NOT NULL,
    fault_s        REAL    NOT NULL,
    sessions       TEXT    NOT NULL,  -- JSON array of session ids
    result_files   TEXT    NOT NULL,  -- JSON array of result-file ids
    -- Written in this order per instrument: appends, not random inserts.
    PRIMARY KEY (instrument_id, start_ms, booking_id)
) WITHOUT ROWID;
CREATE INDEX booking_outcomes_by_start ON booking_outcomes (start_ms);

-- The reconciler reads an instrument's bookings by end: all from this index.
DROP INDEX bookings_by_instrument_time;
CREATE INDEX bookings_by_instrument_end ON bookings
    (instrument_id, end_ms, start_ms, booking_id, user, group_name, usage_type, status);

-- Existing data: every instrument is reconciled from the beginning.
INSERT INTO dirty (instrument_id, from_ms)
    SELECT instrument_id, MIN(at_ms) FROM events GROUP BY instrument_id;
INSERT OR IGNORE INTO dirty (instrument_id, from_ms)
    SELECT instrument_id, MIN(start_ms) FROM bookings GROUP BY instrument_id;
