-- Automatic persisted queries (issue 31): the documents clients have sent with their
-- SHA-256, so that a later request may send the hash alone, to any server sharing the
-- database. Bounded: retention keeps the newest PERSISTED_KEPT (see service::persisted).
CREATE TABLE persisted_queries (
    hash TEXT PRIMARY KEY NOT NULL,
    document TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX persisted_queries_created ON persisted_queries (created_at);
