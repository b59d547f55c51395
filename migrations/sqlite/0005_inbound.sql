-- Bounce and complaint mail as received (kept raw for audit), and the lookup by Message-ID
-- that correlates reports without a VERP token.

CREATE TABLE inbound_messages (
    id            TEXT PRIMARY KEY,
    project_id    TEXT,
    received_at   INTEGER NOT NULL,
    source        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    raw           BLOB NOT NULL,
    kind          TEXT,
    status        TEXT NOT NULL,
    matched       INTEGER NOT NULL DEFAULT 0,
    details       TEXT
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);

CREATE INDEX emails_message_id ON emails (message_id);
