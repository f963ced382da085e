-- 0002: bookings imported from the booking system (CSV or iCalendar).
-- Instants are UTC milliseconds since the Unix epoch (INTEGER).
-- Upserted by booking_id: a re-import updates the row, nothing else is touched.
CREATE TABLE bookings (
    booking_id     TEXT    PRIMARY KEY NOT NULL CHECK (booking_id <> ''),
    instrument_id  TEXT    NOT NULL,
    user           TEXT    NOT NULL,
    group_name     TEXT    NOT NULL,
    usage_type     TEXT    NOT NULL
        CHECK (usage_type IN ('teaching', 'research', 'external', 'training', 'maintenance')),
    start_ms       INTEGER NOT NULL,
    end_ms         INTEGER NOT NULL CHECK (end_ms > start_ms),
    status         TEXT    NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    -- When this row was last inserted or changed, and from which file.
    imported_at_ms INTEGER NOT NULL,
    source         TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX bookings_by_instrument_time ON bookings (instrument_id, start_ms);
