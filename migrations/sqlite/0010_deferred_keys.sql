-- The foreign keys of emails and recipients are checked at COMMIT (DEFERRABLE INITIALLY
-- DEFERRED) instead of after each statement. Herald writes both tables in the group-commit
-- writer's transaction, which an error rolls back whole, so a broken key fails the same batch
-- either way; but an immediate key makes SQLite keep a statement journal for every multi-row
-- insert (a copy of every page the statement touches, so that it can undo the statement
-- alone), which was 3 % of the instructions per accepted email.
--
-- SQLite cannot alter a constraint: both tables are rebuilt with the same columns, rows and
-- indexes. recipients refers to emails, so its rows are set aside in a table without
-- constraints while emails is replaced.
CREATE TABLE recipients_set_aside AS SELECT * FROM recipients;
DROP TABLE recipients;

CREATE TABLE emails_rebuilt (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id) DEFERRABLE INITIALLY DEFERRED,
    api_key_id    TEXT,
    message_id    TEXT NOT NULL,
    stream        TEXT NOT NULL,
    from_email    TEXT NOT NULL,
    from_name     TEXT,
    reply_to      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    tags          TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    text_body     TEXT,
    html_body     TEXT,
    mime          BLOB,
    mime_size     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    scheduled_at  INTEGER,
    expires_at    INTEGER,
    content_purged_at INTEGER
);
INSERT INTO emails_rebuilt (id, project_id, api_key_id, message_id, stream, from_email,
    from_name, reply_to, subject, tags, metadata, text_body, html_body, mime, mime_size,
    created_at, scheduled_at, expires_at, content_purged_at)
SELECT id, project_id, api_key_id, message_id, stream, from_email, from_name, reply_to,
    subject, tags, metadata, text_body, html_body, mime, mime_size, created_at, scheduled_at,
    expires_at, content_purged_at
FROM emails ORDER BY rowid;
DROP TABLE emails;
ALTER TABLE emails_rebuilt RENAME TO emails;
CREATE INDEX emails_project_created ON emails (project_id, id);
CREATE INDEX emails_message_id ON emails (message_id);
CREATE INDEX emails_project_from ON emails (project_id, from_email, id);
CREATE INDEX emails_created ON emails (created_at);
CREATE INDEX emails_unpurged ON emails (created_at) WHERE content_purged_at IS NULL;

-- One row per recipient: this table is the delivery queue.
CREATE TABLE recipients (
    id                TEXT PRIMARY KEY,
    email_id          TEXT NOT NULL REFERENCES emails(id) DEFERRABLE INITIALLY DEFERRED,
    project_id        TEXT NOT NULL,
    position          INTEGER NOT NULL,
    address           TEXT NOT NULL,
    name              TEXT,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    deadline_at       INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    smtp_code         INTEGER,
    smtp_enhanced     TEXT,
    smtp_response     TEXT,
    smtp_phase        TEXT,
    bounce_type       TEXT,
    bounce_sub_type   TEXT,
    sent_at           INTEGER,
    last_event_at     INTEGER NOT NULL
);
INSERT INTO recipients (id, email_id, project_id, position, address, name, kind, status,
    attempts, next_attempt_at, deadline_at, lease_owner, lease_expires_at, smtp_code,
    smtp_enhanced, smtp_response, smtp_phase, bounce_type, bounce_sub_type, sent_at,
    last_event_at)
SELECT id, email_id, project_id, position, address, name, kind, status, attempts,
    next_attempt_at, deadline_at, lease_owner, lease_expires_at, smtp_code, smtp_enhanced,
    smtp_response, smtp_phase, bounce_type, bounce_sub_type, sent_at, last_event_at
FROM recipients_set_aside ORDER BY rowid;
DROP TABLE recipients_set_aside;
CREATE INDEX recipients_email ON recipients (email_id, position);
-- The claim index: only recipients still waiting for an attempt are in it.
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE status IN ('scheduled', 'queued', 'delivery_delayed');
CREATE INDEX recipients_project_address ON recipients (project_id, address, email_id);
CREATE INDEX recipients_project_status ON recipients (project_id, status, email_id);
