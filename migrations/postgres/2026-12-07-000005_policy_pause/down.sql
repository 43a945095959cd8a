ALTER TABLE snapshot_policies DROP COLUMN paused_because;
ALTER TABLE snapshot_policies DROP COLUMN misses;
