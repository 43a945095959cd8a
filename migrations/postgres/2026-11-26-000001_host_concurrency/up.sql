-- How many tasks may run on a host at once, across every robot (issue 8).
ALTER TABLE hosts ADD COLUMN max_concurrent_tasks INTEGER NOT NULL DEFAULT 8
    CHECK (max_concurrent_tasks > 0);
-- Claims count a host's running tasks.
CREATE INDEX tasks_running_by_host ON tasks (host_id) WHERE state = 'RUNNING';
