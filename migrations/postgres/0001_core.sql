-- Herald core schema (Postgres). Portable shape shared with migrations/postgres:
-- text UUIDv7 ids, integer epoch-millisecond times, integer flags.

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
    name          TEXT NOT NULL,
    key_prefix    TEXT NOT NULL UNIQUE,
    secret_hash   BYTEA NOT NULL,
    permission    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    expires_at    BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_project ON api_keys (project_id, id);

CREATE TABLE emails (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
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
    mime          BYTEA,
    mime_size     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    scheduled_at  BIGINT,
    expires_at    BIGINT
);
CREATE INDEX emails_project_created ON emails (project_id, id);

-- One row per recipient: this table is the delivery queue.
CREATE TABLE recipients (
    id                TEXT PRIMARY KEY,
    email_id          TEXT NOT NULL REFERENCES emails(id),
    project_id        TEXT NOT NULL,
    position          BIGINT NOT NULL,
    address           TEXT NOT NULL,
    name              TEXT,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    deadline_at       BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    smtp_code         BIGINT,
    smtp_enhanced     TEXT,
    smtp_response     TEXT,
    smtp_phase        TEXT,
    bounce_type       TEXT,
    bounce_sub_type   TEXT,
    sent_at           BIGINT,
    last_event_at     BIGINT NOT NULL
);
CREATE INDEX recipients_email ON recipients (email_id, position);
-- The claim index: only recipients still waiting for an attempt are in it.
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE status IN ('scheduled', 'queued', 'delivery_delayed');

-- Append-only timeline. email_id is NULL for events about something else (webhook tests).
CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    email_id      TEXT,
    recipient_id  TEXT,
    recipient     TEXT,
    type          TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX events_email ON events (email_id, id);
CREATE INDEX events_project ON events (project_id, id);

CREATE TABLE idempotency_keys (
    project_id       TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    idem_key         TEXT NOT NULL,
    fingerprint      BYTEA NOT NULL,
    response_status  BIGINT NOT NULL,
    response_body    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    PRIMARY KEY (project_id, method, path, idem_key)
);

-- Server-wide values Herald generates once (the return-path signing key when none is configured).
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
