DROP INDEX tasks_project;
ALTER TABLE tasks DROP COLUMN project_id;
