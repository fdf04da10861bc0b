-- The hash of the permission catalog coreapi replicas last started with
-- (names and member defaults of PERMISSIONS_FILE / PERMISSIONS plus the
-- built-ins). One row. A replica that starts with a different catalog
-- replaces the hash and, in the same transaction, queues the invalidation
-- of every cached projection (auth.invalidate.all). The catalog itself is
-- never stored: built-in roles get their permissions from the live catalog
-- at query time, so changing it needs no migration.

-- +goose Up
CREATE TABLE permission_catalog (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    hash        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE permission_catalog;
