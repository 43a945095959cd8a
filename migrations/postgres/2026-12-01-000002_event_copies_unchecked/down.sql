ALTER TABLE task_events ADD CONSTRAINT task_events_vm_id_fkey FOREIGN KEY (vm_id) REFERENCES vms (id);
ALTER TABLE task_events ADD CONSTRAINT task_events_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);
ALTER TABLE snapshot_history ADD CONSTRAINT snapshot_history_vm_id_fkey FOREIGN KEY (vm_id) REFERENCES vms (id);
ALTER TABLE snapshot_history ADD CONSTRAINT snapshot_history_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);
