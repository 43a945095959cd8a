-- Every column that refers to a snapshot or a task has an index (issue 29): deleting a row
-- makes the database check each reference to it, and without an index each check reads
-- the whole referring table. Retention deletes closed snapshots and ended tasks by the
-- hundred, and on PostgreSQL a batch of 250 snapshots took about 1.7 s of scans of
-- `tasks` and `snapshots`; `held_snapshots` reads the same columns.
CREATE INDEX snapshots_parent ON snapshots (parent_id);
CREATE INDEX tasks_prev_active ON tasks (prev_active_id);
CREATE INDEX tasks_save_snapshot ON tasks (save_snapshot_id);
CREATE INDEX policy_runs_snapshot ON policy_runs (snapshot_id);
CREATE INDEX policy_runs_task ON policy_runs (task_id);
