ALTER TABLE task_events DROP COLUMN detail;
ALTER TABLE tasks DROP COLUMN error_detail;
ALTER TABLE tasks DROP COLUMN error_code;
