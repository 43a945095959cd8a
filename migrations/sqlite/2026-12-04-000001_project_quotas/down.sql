ALTER TABLE projects DROP COLUMN max_snapshots;
