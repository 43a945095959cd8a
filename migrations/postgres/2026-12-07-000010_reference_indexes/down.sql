DROP INDEX policy_runs_task;
DROP INDEX policy_runs_snapshot;
DROP INDEX tasks_save_snapshot;
DROP INDEX tasks_prev_active;
DROP INDEX snapshots_parent;
