-- Snapshot policies (issue 11): a schedule, a name template and retention, for one VM
-- or for the VMs of a project that a name filter covers. Keep in step with the other
-- backend's migration and src/db/schema.rs.
CREATE TABLE snapshot_policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    -- Who acts: the creator's token (its role and project); revoking it stops the policy.
    token_id BIGINT NOT NULL REFERENCES tokens (id),
    name TEXT NOT NULL,
    vm_id BIGINT REFERENCES vms (id),
    vm_filter TEXT,
    every_seconds BIGINT CHECK (every_seconds IS NULL OR every_seconds >= 60),
    cron TEXT,
    time_zone TEXT NOT NULL,
    name_template TEXT NOT NULL,
    keep_last INTEGER CHECK (keep_last IS NULL OR keep_last >= 1),
    max_age_seconds BIGINT CHECK (max_age_seconds IS NULL OR max_age_seconds >= 60),
    -- Interval slots are counted from here.
    anchor_at TIMESTAMP NOT NULL,
    -- The next slot. A run takes it by moving it on (compare and set): one process runs
    -- each slot, and slots missed while every process was down make one run, not many.
    next_due_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    CHECK ((every_seconds IS NULL) <> (cron IS NULL)),
    CHECK (vm_id IS NULL OR vm_filter IS NULL),
    UNIQUE (project_id, name)
);

-- One VM's part of one slot: PENDING until its snapshot is asked for (CREATED), or until
-- the next slot comes first (MISSED). A busy VM, or one at a limit, is tried again.
CREATE TABLE policy_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    policy_id BIGINT NOT NULL REFERENCES snapshot_policies (id) ON DELETE CASCADE,
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    due_at TIMESTAMP NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'CREATED', 'MISSED')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    snapshot_id BIGINT REFERENCES snapshots (id),
    task_id BIGINT REFERENCES tasks (id),
    -- A process trying the run holds it until then (a dead one's runs are taken up).
    claimed_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (policy_id, vm_id, due_at)
);
CREATE INDEX policy_runs_pending ON policy_runs (state) WHERE state = 'PENDING';

-- The policy a snapshot was made by (retention prunes only these), and its run's slot.
ALTER TABLE snapshots ADD COLUMN policy_id BIGINT REFERENCES snapshot_policies (id) ON DELETE SET NULL;
ALTER TABLE snapshots ADD COLUMN policy_due_at TIMESTAMP;
