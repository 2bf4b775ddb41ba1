DROP TABLE push_event_outbox;
ALTER TABLE repositories DROP COLUMN pushed_at, DROP COLUMN size_bytes;
