-- Hourly delivery statistics, per recipient, written in the same transaction as the events
-- they count, so they survive retention purges and never need an event scan.
-- `tag = '*'` rows count every recipient once; a row per tag counts the recipients of emails
-- carrying that tag (an email with two tags is in both). `shard` spreads one key over several
-- rows (the ingest writer, each delivery worker…) so that concurrent writers on Postgres do
-- not queue on one hot row's lock; readers sum the shards.
CREATE TABLE stats_hourly (
    project_id            TEXT NOT NULL,
    tag                   TEXT NOT NULL,
    hour                  BIGINT NOT NULL,
    stream                TEXT NOT NULL,
    domain                TEXT NOT NULL,
    recipient_domain      TEXT NOT NULL,
    shard                 BIGINT NOT NULL,
    accepted              BIGINT NOT NULL DEFAULT 0,
    sent                  BIGINT NOT NULL DEFAULT 0,
    delivered             BIGINT NOT NULL DEFAULT 0,
    delivery_delayed      BIGINT NOT NULL DEFAULT 0,
    bounced_permanent     BIGINT NOT NULL DEFAULT 0,
    bounced_transient     BIGINT NOT NULL DEFAULT 0,
    bounced_undetermined  BIGINT NOT NULL DEFAULT 0,
    complained            BIGINT NOT NULL DEFAULT 0,
    failed                BIGINT NOT NULL DEFAULT 0,
    suppressed            BIGINT NOT NULL DEFAULT 0,
    canceled              BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, tag, hour, stream, domain, recipient_domain, shard)
);

-- Bounces by type and sub-type, for GET /v1/stats/bounces.
CREATE TABLE stats_bounces (
    project_id   TEXT NOT NULL,
    hour         BIGINT NOT NULL,
    stream       TEXT NOT NULL,
    domain       TEXT NOT NULL,
    bounce_type  TEXT NOT NULL,
    sub_type     TEXT NOT NULL,
    shard        BIGINT NOT NULL,
    count        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, hour, stream, domain, bounce_type, sub_type, shard)
);
