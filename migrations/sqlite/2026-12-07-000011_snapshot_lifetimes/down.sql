DROP INDEX snapshots_expiry;
ALTER TABLE snapshot_history DROP COLUMN reason;
ALTER TABLE projects DROP COLUMN max_lifetime_hours;
ALTER TABLE snapshots DROP COLUMN expires_at;
