-- 0006: disputed time (docs/verified.md, "Disputed time").
-- A move correction names the booking its usage is taken from; the booking
-- it goes to is `booking_id`. Assigning corrections leave it NULL.
ALTER TABLE corrections ADD COLUMN from_booking_id TEXT;

-- Per booking outcome: the other confirmed bookings whose slot overlaps its
-- slot, and the bookings a session passed to or came from (JSON arrays of
-- booking ids), and `used_s` after move corrections.
ALTER TABLE booking_outcomes ADD COLUMN overlapping_bookings TEXT NOT NULL DEFAULT '[]';
ALTER TABLE booking_outcomes ADD COLUMN usage_taken_by TEXT NOT NULL DEFAULT '[]';
ALTER TABLE booking_outcomes ADD COLUMN took_usage_from TEXT NOT NULL DEFAULT '[]';
ALTER TABLE booking_outcomes ADD COLUMN corrected_used_s REAL;

-- Outcomes stored before this version lack the new columns: a changed
-- policy hash makes the next start reconcile every instrument again.
UPDATE reconciled SET policy_hash = '';
