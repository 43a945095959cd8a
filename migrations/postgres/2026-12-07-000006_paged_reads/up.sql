-- Every page a read asks for is read off an index that starts with its scope and goes
-- on in id order (issue 29): a page of a year-old VM's history costs what a new VM's
-- does. A VM's open snapshots (the tree every action and read starts from) have an index
-- of their own, so closed ones, which pile up for ever, are never walked past.
DROP INDEX vms_project;
CREATE INDEX vms_project ON vms (project_id, id);
DROP INDEX snapshots_vm;
CREATE INDEX snapshots_vm ON snapshots (vm_id, id);
CREATE INDEX snapshots_open ON snapshots (vm_id, id) WHERE state <> 99;
DROP INDEX snapshot_history_vm;
CREATE INDEX snapshot_history_vm ON snapshot_history (vm_id, id);
DROP INDEX tasks_vm;
CREATE INDEX tasks_vm ON tasks (vm_id, id);
CREATE INDEX tasks_snapshot ON tasks (snapshot_id, id);
-- A policy's runs, newest slot first (`Policy.runs`): one per VM and slot, for ever.
CREATE INDEX policy_runs_policy_id_due ON policy_runs (policy_id, due_at, id);
