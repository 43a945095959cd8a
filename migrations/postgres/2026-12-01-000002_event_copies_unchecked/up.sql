-- The VM and project of an event or a history row are copies of its task's or snapshot's,
-- kept for filtering. Checking that they exist cost two foreign-key lookups per row
-- written, 7 events and 3 history rows per task: about a tenth of PostgreSQL's time at
-- full load. The task and the snapshot they belong to stay checked, and nothing deletes
-- a VM or a project.
ALTER TABLE task_events DROP CONSTRAINT task_events_vm_id_fkey;
ALTER TABLE task_events DROP CONSTRAINT task_events_project_id_fkey;
ALTER TABLE snapshot_history DROP CONSTRAINT snapshot_history_vm_id_fkey;
ALTER TABLE snapshot_history DROP CONSTRAINT snapshot_history_project_id_fkey;
