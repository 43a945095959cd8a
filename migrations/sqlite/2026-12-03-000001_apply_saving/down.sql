ALTER TABLE tasks DROP COLUMN save_snapshot_id;
