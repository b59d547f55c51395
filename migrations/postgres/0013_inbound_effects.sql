-- Which state changes each kept inbound message has made, so that reading a message again
-- (after a crash, or with a better parser) makes none of them twice; and the lookup of
-- messages by processing status for that re-reading.

CREATE TABLE inbound_effects (
    inbound_id    TEXT NOT NULL,
    recipient_id  TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (inbound_id, recipient_id, event_type)
);
CREATE INDEX inbound_effects_created ON inbound_effects (created_at);
CREATE INDEX inbound_messages_status ON inbound_messages (status, received_at);

-- The envelope recipients a message came to (the signed return path is the evidence that
-- lets a report change state), kept to read the message again.
ALTER TABLE inbound_messages ADD COLUMN envelope TEXT;
