DROP INDEX snapshots_closed;
DROP TABLE retention_marks;
