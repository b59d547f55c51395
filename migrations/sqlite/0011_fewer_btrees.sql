-- events, email_tags and email_metadata become WITHOUT ROWID tables: their rows live in the
-- primary key's B-tree itself. As rowid tables each was two B-trees, the rows by rowid and
-- the primary key's index (for email_tags and email_metadata holding every column a second
-- time), and every accepted email inserted into both: a group commit of 16 emails wrote
-- about 6 of its 77 log pages for them. Their other indexes stay as they were: events'
-- already end with its id, the key that now stands for a rowid.
--
-- SQLite cannot alter a table into WITHOUT ROWID: each is rebuilt with the same columns,
-- rows and indexes.
--
-- And emails_message_id goes: every Message-ID Herald writes is <email id@domain>, so a
-- bounce report's Message-ID finds its email by the primary key (store::inbound), and the
-- index was one more B-tree every accepted email went into (3 of the 77 log pages).
DROP INDEX emails_message_id;
CREATE TABLE events_rebuilt (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    email_id      TEXT,
    recipient_id  TEXT,
    recipient     TEXT,
    type          TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO events_rebuilt (id, project_id, email_id, recipient_id, recipient, type, data,
    created_at)
SELECT id, project_id, email_id, recipient_id, recipient, type, data, created_at
FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_email ON events (email_id, id);
CREATE INDEX events_project ON events (project_id, id);

CREATE TABLE email_tags_rebuilt (
    project_id  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    email_id    TEXT NOT NULL,
    PRIMARY KEY (project_id, tag, email_id)
) WITHOUT ROWID;
INSERT INTO email_tags_rebuilt (project_id, tag, email_id)
SELECT project_id, tag, email_id FROM email_tags ORDER BY project_id, tag, email_id;
DROP TABLE email_tags;
ALTER TABLE email_tags_rebuilt RENAME TO email_tags;

CREATE TABLE email_metadata_rebuilt (
    project_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    email_id    TEXT NOT NULL,
    PRIMARY KEY (project_id, key, value, email_id)
) WITHOUT ROWID;
INSERT INTO email_metadata_rebuilt (project_id, key, value, email_id)
SELECT project_id, key, value, email_id FROM email_metadata
ORDER BY project_id, key, value, email_id;
DROP TABLE email_metadata;
ALTER TABLE email_metadata_rebuilt RENAME TO email_metadata;
