DROP INDEX tasks_running_by_host;
ALTER TABLE hosts DROP COLUMN max_concurrent_tasks;
