-- An apply that saves the VM's current state first (issue 10): the snapshot the one
-- task creates before it applies. NULL for every other task.
ALTER TABLE tasks ADD COLUMN save_snapshot_id BIGINT REFERENCES snapshots (id);
