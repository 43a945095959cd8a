-- A task's project, copied from its VM (a VM never changes project), so that a project's
-- task list (`tasks` without `vmId`) is read off an index that starts with the project,
-- as every other list is (issue 29), instead of walking every project's newer tasks.
ALTER TABLE tasks ADD COLUMN project_id BIGINT;
UPDATE tasks SET project_id = vms.project_id FROM vms WHERE vms.id = tasks.vm_id;
ALTER TABLE tasks ALTER COLUMN project_id SET NOT NULL;
CREATE INDEX tasks_project ON tasks (project_id, id);
