-- 0012: upward federation, site -> hub (docs/design/federation.md).

-- Site side. What changed since the hub last acknowledged it, one row per
-- natural key (`tbl` names the table, `key_int`/`key_text` the rest of
-- its key), holding the version of its newest change. Triggers created
-- while `[upstream]` is set fill it; a batch the hub acked (2xx) is
-- deleted up to its highest version, so a change made while the batch
-- was in flight (a higher version) stays to be sent again.
CREATE TABLE fed_outbox (
    tbl           TEXT    NOT NULL,
    instrument_id TEXT    NOT NULL,
    key_int       INTEGER NOT NULL,
    key_text      TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    PRIMARY KEY (tbl, instrument_id, key_int, key_text)
) WITHOUT ROWID;
CREATE INDEX fed_outbox_by_version ON fed_outbox (version);

-- The site's change counter (never reset, so versions only grow), what
-- the hub last acknowledged of the registry, and the id of the last of the
-- site's checkpoints it acknowledged.
CREATE TABLE fed_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    next_version     INTEGER NOT NULL,
    acked_version    INTEGER NOT NULL,
    registry_sha256  TEXT    NOT NULL,
    acked_checkpoint INTEGER NOT NULL DEFAULT 0
);
INSERT INTO fed_state (id, next_version, acked_version, registry_sha256) VALUES (1, 0, 0, '');

-- Hub side. One row per site that ever sent a batch: when, and up to when
-- its figures are final.
CREATE TABLE fed_sites (
    site_id            TEXT PRIMARY KEY NOT NULL,
    last_batch_ms      INTEGER NOT NULL,
    settled_through_ms INTEGER,
    version            INTEGER NOT NULL
) WITHOUT ROWID;

-- The forwarded registry: instruments under their hub id `site/id`.
CREATE TABLE fed_instruments (
    instrument_id      TEXT PRIMARY KEY NOT NULL,
    site_id            TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    unit               TEXT,
    time_zone          TEXT    NOT NULL,
    open_hours         TEXT,   -- JSON of the site's open_hours config, NULL: unknown
    settled_through_ms INTEGER
) WITHOUT ROWID;

-- The version of the newest change applied per forwarded row: an older
-- (resent, reordered) change is ignored, so applying is idempotent.
CREATE TABLE fed_versions (
    site_id       TEXT    NOT NULL,
    tbl           TEXT    NOT NULL,
    instrument_id TEXT    NOT NULL,
    key_int       INTEGER NOT NULL,
    key_text      TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    PRIMARY KEY (site_id, tbl, instrument_id, key_int, key_text)
) WITHOUT ROWID;

-- Site corrections, kept as sent (their effect is in the forwarded days'
-- c_* columns already); ids are the site's.
CREATE TABLE fed_corrections (
    site_id       TEXT    NOT NULL,
    id            INTEGER NOT NULL,
    instrument_id TEXT    NOT NULL,
    row           TEXT    NOT NULL,  -- JSON object of the site's columns
    PRIMARY KEY (site_id, id)
) WITHOUT ROWID;

-- Signed checkpoints a site forwarded (C2SP signed notes), verbatim, with
-- the hub's check of each (federation/history.rs): signed by the site's
-- configured key, and extending the site's last good one; `problem` says
-- why not (the site is flagged).
CREATE TABLE fed_checkpoints (
    site_id        TEXT    NOT NULL,
    note           TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    signed_at_ms   INTEGER,            -- NULL: the note could not be read
    verified       INTEGER NOT NULL,   -- 1: signature checked with hub.sites[].checkpoint_key
    problem        TEXT,               -- NULL: it extends the last good one
    PRIMARY KEY (site_id, note)
) WITHOUT ROWID;
