ALTER TABLE snapshots DROP COLUMN protected;
