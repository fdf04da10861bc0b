-- The outbox relays registered as publishing. Each coreapi relay publishes
-- its own beat straight to NATS (auth.outbox.relay) every
-- OUTBOX_HEARTBEAT_INTERVAL and, while NATS confirms it, upserts its row
-- here at each heartbeat look; the heartbeat rows list the relays seen in
-- the last two and a half intervals. A proxy that does not hear the beat
-- of a listed relay does not receive what that relay publishes (its NATS
-- node lost its route to the proxy's) and trusts its caches only for
-- MAX_STALENESS. A relay deletes its row when it stops; the relays' prune
-- deletes the rows of relays gone without doing so.

-- +goose Up
CREATE TABLE outbox_relays (
    id      text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE outbox_relays;
