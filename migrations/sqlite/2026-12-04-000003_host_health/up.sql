-- Host health (issue 12): whether the robots' connections reach each host now, since
-- when, and the last failure to reach it. Written by the processes that call the host;
-- the last to notice a change wins.
CREATE TABLE host_health (
    host_id BIGINT PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    reachable BOOLEAN NOT NULL,
    since TIMESTAMP NOT NULL,
    last_error TEXT
);
