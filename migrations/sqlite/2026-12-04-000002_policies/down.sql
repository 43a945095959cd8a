ALTER TABLE snapshots DROP COLUMN policy_due_at;
ALTER TABLE snapshots DROP COLUMN policy_id;
DROP TABLE policy_runs;
DROP TABLE snapshot_policies;
