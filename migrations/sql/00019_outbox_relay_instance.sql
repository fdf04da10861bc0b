-- The process behind each registered relay. A relay's name is stable
-- across restarts of its process (the pod's host name and coreapi's
-- port), so a replica restarted while the database is away beats under
-- the name the proxies already expect. Two live processes must not share
-- one name (a proxy would take one's beat for the other's): each
-- registration writes the process's random instance and reads the one it
-- replaced, and a relay that finds another instance since its own last
-- registration takes a name of its own.

-- +goose Up
ALTER TABLE outbox_relays ADD COLUMN instance text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE outbox_relays DROP COLUMN instance;
