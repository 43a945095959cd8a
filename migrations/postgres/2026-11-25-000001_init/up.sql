-- snaptree's tables on PostgreSQL. Keep in step with migrations/sqlite and src/db/schema.rs.

CREATE TABLE projects (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('ADMIN', 'OPERATOR', 'VIEWER')),
    -- SHA-256 of the secret; the secret itself is never stored.
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE TABLE hosts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    hypervisor TEXT NOT NULL CHECK (hypervisor IN ('KVM', 'HYPERV', 'SIMULATED')),
    uri TEXT NOT NULL,
    max_snapshots_per_vm INTEGER CHECK (max_snapshots_per_vm >= 0),
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE vms (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id BIGINT NOT NULL REFERENCES hosts (id),
    project_id BIGINT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    identifier TEXT NOT NULL,
    state INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (host_id, identifier)
);
CREATE INDEX vms_project ON vms (project_id);

CREATE TABLE snapshots (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    parent_id BIGINT REFERENCES snapshots (id),
    name TEXT NOT NULL,
    description TEXT,
    host_name TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT FALSE,
    state INTEGER NOT NULL CHECK (state IN (1, 2, 3, 4, 8, 10, 11, 17, 99)),
    remove_subtree BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (NOT (active AND state = 99))
);
CREATE INDEX snapshots_vm ON snapshots (vm_id);
-- Names are unique among a VM's non-closed snapshots.
CREATE UNIQUE INDEX snapshots_open_name ON snapshots (vm_id, name) WHERE state <> 99;
-- A VM has at most one active snapshot.
CREATE UNIQUE INDEX snapshots_one_active ON snapshots (vm_id) WHERE active;

CREATE TABLE snapshot_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snapshot_id BIGINT NOT NULL REFERENCES snapshots (id),
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    project_id BIGINT NOT NULL REFERENCES projects (id),
    state INTEGER NOT NULL,
    actor TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX snapshot_history_vm ON snapshot_history (vm_id);

CREATE TABLE tasks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('BUILD', 'UPDATE', 'SCRUB')),
    state TEXT NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    host_id BIGINT NOT NULL REFERENCES hosts (id),
    snapshot_id BIGINT NOT NULL REFERENCES snapshots (id),
    -- The VM's active snapshot before the action, restored when it fails.
    prev_active_id BIGINT REFERENCES snapshots (id),
    requested_by TEXT NOT NULL,
    progress INTEGER CHECK (progress BETWEEN 0 AND 100),
    phase TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- The robot process working on it, and until when its claim holds.
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP
);
-- At most one open task per VM.
CREATE UNIQUE INDEX tasks_one_open_per_vm ON tasks (vm_id) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX tasks_open ON tasks (state, id) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX tasks_vm ON tasks (vm_id);

CREATE TABLE task_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasks (id),
    vm_id BIGINT NOT NULL REFERENCES vms (id),
    project_id BIGINT NOT NULL REFERENCES projects (id),
    state TEXT NOT NULL,
    progress INTEGER,
    phase TEXT,
    message TEXT,
    at TIMESTAMP NOT NULL
);
CREATE INDEX task_events_vm ON task_events (vm_id, id);
CREATE INDEX task_events_task ON task_events (task_id, id);
