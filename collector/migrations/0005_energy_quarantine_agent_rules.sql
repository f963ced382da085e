-- 0005: energy counted once per instant, quarantine rows that name their
-- agent and the kind of refusal, and the state rules agents report.

-- The stretches of time whose energy is already in `energy_hours`, per
-- instrument, merged where they touch. A summary adds only the energy of
-- the part of its interval not yet covered, so replaying or backfilling
-- the same log again (under new seqs) never adds it twice.
CREATE TABLE energy_coverage (
    instrument_id TEXT    NOT NULL,
    start_ms      INTEGER NOT NULL,
    end_ms        INTEGER NOT NULL,
    PRIMARY KEY (instrument_id, start_ms)
) WITHOUT ROWID;

-- `topic` is the MQTT topic the payload came on; `agent_id` the agent it
-- names (NULL when none can be told); `kind` the refusal's class
-- (docs/collector-ingest.md), `reason` its full text. Rows stored before
-- this version are classified at open.
ALTER TABLE quarantine ADD COLUMN agent_id TEXT;
ALTER TABLE quarantine ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
CREATE INDEX quarantine_by_time ON quarantine (received_at_ms);
CREATE INDEX quarantine_by_agent ON quarantine (agent_id, received_at_ms);
CREATE INDEX quarantine_by_kind ON quarantine (kind, received_at_ms);

-- The state rules (JSON, defaults resolved) the agent said it applies in
-- its newest online status; checked against the registry's thresholds.
ALTER TABLE agents ADD COLUMN state_rules TEXT;
