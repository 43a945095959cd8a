DROP TABLE task_events;
DROP TABLE tasks;
DROP TABLE snapshot_history;
DROP TABLE snapshots;
DROP TABLE vms;
DROP TABLE hosts;
DROP TABLE tokens;
DROP TABLE projects;
