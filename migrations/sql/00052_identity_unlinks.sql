-- The sign-in providers an account's owner unlinked (DELETE
-- /users/me/identities/{provider}). A sign-in through such a provider
-- whose address is the account's no longer links to it again: whoever
-- holds an account at the provider with that address, the one the owner
-- removed, or a new one of theirs there (another subject), would be back
-- in at their next sign-in. Kept per provider, not per subject, for that
-- reason. A new table, which earlier releases neither read nor write:
-- during a rollout a pod of the previous release still links by address
-- (and has no route to unlink).

-- +goose Up
CREATE TABLE identity_unlinks (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, provider)
);

-- +goose Down
DROP TABLE identity_unlinks;
