-- Sending domains, their DKIM keys (private keys sealed), and per-key API domain limits.

CREATE TABLE domains (
    id                  TEXT PRIMARY KEY,
    project_id          TEXT NOT NULL,
    name                TEXT NOT NULL,
    status              TEXT NOT NULL,
    dkim_mode           TEXT NOT NULL,
    return_path_name    TEXT,
    records_status      TEXT NOT NULL,
    check_attempts      BIGINT NOT NULL DEFAULT 0,
    next_check_at       BIGINT,
    last_checked_at     BIGINT,
    verified_at         BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX domains_check ON domains (next_check_at) WHERE next_check_at IS NOT NULL;

CREATE TABLE dkim_keys (
    id            TEXT PRIMARY KEY,
    domain_id     TEXT NOT NULL,
    selector      TEXT NOT NULL,
    algorithm     TEXT NOT NULL,
    private_key   TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retired_at    BIGINT,
    UNIQUE (domain_id, selector)
);
CREATE INDEX dkim_keys_domain ON dkim_keys (domain_id, state);

ALTER TABLE api_keys ADD COLUMN allowed_domains TEXT;
