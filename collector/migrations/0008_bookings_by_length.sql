-- 0008: bookings by length. Booking outcomes are selected by overlap with
-- a range; the longest booking (MAX over this index, one lookup) bounds how
-- long before the range an overlapping booking can start, so the query
-- stays a range of the by-start keys.
CREATE INDEX bookings_by_length ON bookings (end_ms - start_ms);
