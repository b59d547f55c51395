-- The suppression list. stream '' means every stream. email is the normalised address
-- (domain lower-cased, local part exact).

CREATE TABLE suppressions (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL,
    email            TEXT NOT NULL,
    stream           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    source_email_id  TEXT,
    details          TEXT,
    created_at       BIGINT NOT NULL,
    UNIQUE (project_id, email, stream)
);
CREATE INDEX suppressions_project ON suppressions (project_id, id);
