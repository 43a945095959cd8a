-- Every read a tenant can make is scoped by its project, VM, task or snapshot, and each
-- has an index that starts with that scope (issue 27): a tenant's replay or listing reads
-- its own rows, not every project's in id order.
CREATE INDEX task_events_project ON task_events (project_id, id);
CREATE INDEX snapshot_history_project ON snapshot_history (project_id, id);
CREATE INDEX snapshot_history_snapshot ON snapshot_history (snapshot_id, id);
-- Deleting a policy unlinks its snapshots.
CREATE INDEX snapshots_policy ON snapshots (policy_id);
