-- What tenants see of a failure, and what the host said (issue 27): `error` and an
-- event's `message` hold snaptree's own words, `error_code` a stable code for scripts;
-- the host's own output (which may name hosts, addresses and paths) is kept apart, in
-- `error_detail` and an event's `detail`, for ADMIN tokens and the log.
ALTER TABLE tasks ADD COLUMN error_code TEXT;
ALTER TABLE tasks ADD COLUMN error_detail TEXT;
ALTER TABLE task_events ADD COLUMN detail TEXT;
