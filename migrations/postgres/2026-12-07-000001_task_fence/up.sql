-- Fenced claims (issue 26): each claim of a task adds one to its fence, and every write a
-- robot makes under a claim (progress, renewal, end, release) must match the fence it
-- claimed with. A robot whose lease ran out and whose task another claim took (even one
-- of the same process) writes nothing more.
ALTER TABLE tasks ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
