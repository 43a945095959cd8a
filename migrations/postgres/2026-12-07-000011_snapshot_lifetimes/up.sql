-- Lifetimes (issue 30): a snapshot may expire; the robot's sweep deletes it once it has,
-- unless it is protected or the VM's active one. A project may cap every new snapshot's
-- lifetime. History says why a state changed ("user", "policy", "expired", "robot";
-- NULL on rows written before reasons were kept).
ALTER TABLE snapshots ADD COLUMN expires_at TIMESTAMP;
ALTER TABLE projects ADD COLUMN max_lifetime_hours INTEGER
    CHECK (max_lifetime_hours IS NULL OR max_lifetime_hours >= 1);
ALTER TABLE snapshot_history ADD COLUMN reason TEXT;
-- The sweep's read: only snapshots it may delete are in the index, so its cost follows
-- what is due, never how many snapshots have expired and been kept. Its query repeats
-- this condition word for word (SQLite uses a partial index only then).
CREATE INDEX snapshots_expiry ON snapshots (expires_at, id)
    WHERE expires_at IS NOT NULL AND state <> 99 AND NOT protected AND NOT active;
