-- Webhook deliveries are claimed per endpoint, each endpoint a lane of its own so that a slow
-- or dead one holds up no other: the pending ones by endpoint, in due order. An endpoint may
-- cap the rate it is sent events at (events per second; NULL: no cap).

DROP INDEX webhook_deliveries_due;
DROP INDEX webhook_deliveries_endpoint;
CREATE INDEX webhook_deliveries_lane ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
ALTER TABLE webhook_endpoints ADD COLUMN rate_limit INTEGER;
