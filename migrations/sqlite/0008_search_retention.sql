-- Indexes that let a filtered page of GET /v1/emails walk one index in id order instead of
-- scanning the project's emails: tags and metadata pairs as rows, recipients by status.
CREATE TABLE email_tags (
    project_id  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    email_id    TEXT NOT NULL,
    PRIMARY KEY (project_id, tag, email_id)
);
CREATE TABLE email_metadata (
    project_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    email_id    TEXT NOT NULL,
    PRIMARY KEY (project_id, key, value, email_id)
);
INSERT INTO email_tags (project_id, tag, email_id)
    SELECT e.project_id, j.value, e.id FROM emails e, json_each(e.tags) j;
INSERT INTO email_metadata (project_id, key, value, email_id)
    SELECT e.project_id, j.key, j.value, e.id FROM emails e, json_each(e.metadata) j;

DROP INDEX recipients_project_address;
CREATE INDEX recipients_project_address ON recipients (project_id, address, email_id);
CREATE INDEX recipients_project_status ON recipients (project_id, status, email_id);
CREATE INDEX emails_project_from ON emails (project_id, from_email, id);

-- Retention: when the bodies were purged, and the index the purge job walks.
ALTER TABLE emails ADD COLUMN content_purged_at INTEGER;
CREATE INDEX emails_created ON emails (created_at);
CREATE INDEX emails_unpurged ON emails (created_at) WHERE content_purged_at IS NULL;
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
CREATE INDEX webhook_attempts_time ON webhook_attempts (attempted_at);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
