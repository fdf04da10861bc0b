-- When a signing key was first found by any coreapi, by the database's
-- clock. A key made by `coreapi keys generate` signs only once it is
-- SIGNING_KEY_ACTIVATION_DELAY old, counted from the later of its kid's
-- time and this: a coreapi that starts (or restarts) with the key already
-- in its directory goes by when the fleet first saw it, not by the kid's
-- time alone (a key generated long before it was published would sign at
-- once on a pod started by the rollout, before the other pods' proxies can
-- have it) nor by its own start (the key would sign later on a restarted
-- pod than on the others). The file times of a mounted Secret say
-- nothing: they are those of its last sync. A row is written once and never
-- changed; a kid is unique (creation time plus random suffix).

-- +goose Up
CREATE TABLE signing_key_sightings (
    kid        text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE signing_key_sightings;
