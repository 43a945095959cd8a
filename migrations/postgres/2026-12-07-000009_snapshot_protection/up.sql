-- A protected snapshot cannot be deleted, alone, in a subtree or by a policy's retention,
-- until it is unprotected (issue 30).
ALTER TABLE snapshots ADD COLUMN protected BOOLEAN NOT NULL DEFAULT false;
