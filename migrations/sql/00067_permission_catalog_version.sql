-- The version of the permission catalog recorded last (the catalog's
-- `version`, 0 when it declares none). It orders catalogs during a
-- rollout: a replica whose catalog has a lower version than the recorded
-- one does not replace it (an old replica restarting mid-rollout), and
-- refuses the changes that hand out privileges (catalog_rollout) as any
-- replica whose catalog is not the recorded one. Catalogs of the same
-- version replace each other, the last to start winning, as before.
--
-- Additive: every existing row gets 0. Pods of the previous release
-- neither read nor write the column: one that starts during the rollout
-- replaces the hash and leaves the version, so the next new pod to start
-- (same version, another hash) records its catalog again.

-- +goose Up
ALTER TABLE permission_catalog
    ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);

-- +goose Down
ALTER TABLE permission_catalog DROP COLUMN version;
