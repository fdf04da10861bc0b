-- The outbox's heartbeat: a row on auth.outbox.heartbeat written every
-- OUTBOX_HEARTBEAT_INTERVAL by whichever coreapi replica finds the newest
-- one older than that and already published, and published by the relays
-- like any other row. Proxies that hear none for NATS_HEARTBEAT_TIMEOUT know
-- that the relays are not publishing (while NATS may be up for them) and
-- trust their caches only for MAX_STALENESS. This index finds the newest
-- heartbeat row without reading the others.

-- +goose Up
CREATE INDEX outbox_heartbeat_idx ON outbox (created_at) WHERE subject = 'auth.outbox.heartbeat';

-- +goose Down
DROP INDEX outbox_heartbeat_idx;
