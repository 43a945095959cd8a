-- Quotas per project (issue 11): the most non-closed snapshots across the project's VMs.
-- NULL: no quota (each host's limit per VM still holds).
ALTER TABLE projects ADD COLUMN max_snapshots INTEGER CHECK (max_snapshots IS NULL OR max_snapshots >= 0);
