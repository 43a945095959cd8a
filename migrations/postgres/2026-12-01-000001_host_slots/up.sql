-- The place a running task holds among its host's max_concurrent_tasks (issue 8). On
-- PostgreSQL a task takes a free slot under an advisory lock of that slot, so that takes
-- for one host need not wait for each other's commits; SQLite's one writer counts.
ALTER TABLE tasks ADD COLUMN slot INTEGER;
