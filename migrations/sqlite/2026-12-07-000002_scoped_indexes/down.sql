DROP INDEX snapshots_policy;
DROP INDEX snapshot_history_snapshot;
DROP INDEX snapshot_history_project;
DROP INDEX task_events_project;
