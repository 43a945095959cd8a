-- Retention (issue 29): how far each kind of row has been retired. A replay from before
-- the events' mark may have lost events, and is told so (CURSOR_EXPIRED).
CREATE TABLE retention_marks (
    name TEXT PRIMARY KEY,
    through_id BIGINT NOT NULL
);
-- Closed snapshots, the longest closed first: what retention retires (their rows and
-- history), read by age rather than walked past.
CREATE INDEX snapshots_closed ON snapshots (updated_at, id) WHERE state = 99;
