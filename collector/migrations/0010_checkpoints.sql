-- 0010: the collector's signed checkpoints (issue 14, docs/evidence.md).
-- `note` is the whole C2SP signed note (body, blank line, signature line),
-- exactly as signed and served; `signed_at_ms` is the instant its body names.
CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    signed_at_ms INTEGER NOT NULL,
    key_name     TEXT    NOT NULL,
    note         TEXT    NOT NULL
);
CREATE INDEX checkpoints_by_time ON checkpoints (signed_at_ms);
