-- The process behind each registered relay. A relay's name is stable
-- across restarts of its process (the pod's host name and coreapi's
-- port), so a replica restarted while the database is away beats under
-- the name the proxies already expect. Two live processes must not share
-- one name (a proxy would take one's beat for the other's): a process's
-- first registration writes its random instance (taking over a
-- predecessor's row), later ones renew only a row that still holds it, and
-- a relay that finds another instance there takes a name of its own.

-- +goose Up
ALTER TABLE outbox_relays ADD COLUMN instance text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE outbox_relays DROP COLUMN instance;
