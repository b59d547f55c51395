-- The operator console: operators (people, signed in with a password), what each may do in
-- which project, their sessions, and the audit log of every change made from the console.

CREATE TABLE operators (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    -- Argon2id, as a PHC string.
    password_hash  TEXT NOT NULL,
    -- admin (every project, projects themselves) or member (the projects granted).
    role           TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE operator_grants (
    operator_id  TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- owner (changes things) or viewer (reads).
    role         TEXT NOT NULL,
    PRIMARY KEY (operator_id, project_id)
);

-- A session is found by the hash of its cookie's token; the token itself is never stored.
CREATE TABLE console_sessions (
    token_hash   BYTEA PRIMARY KEY,
    operator_id  TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_operator ON console_sessions (operator_id);

CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    at              BIGINT NOT NULL,
    operator_id     TEXT NOT NULL,
    operator_email  TEXT NOT NULL,
    -- NULL for changes outside any one project (projects, operators).
    project_id      TEXT,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX audit_log_project ON audit_log (project_id, id);

-- The console's email page shows the reports that changed each recipient.
CREATE INDEX inbound_effects_recipient ON inbound_effects (recipient_id);
-- And the webhook deliveries of each of an email's events.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
