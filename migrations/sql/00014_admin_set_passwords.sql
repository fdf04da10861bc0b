-- A password a tenant admin chose for a new member (POST /users with a
-- password) is known to that admin until the account's owner changes or
-- resets it. An OIDC sign-in does not link a provider identity to such an
-- account by its address: the mailbox owner would sign in through the
-- provider while the admin kept password access to the account, in every
-- tenant it joins later; nor does such an account accept an invitation into
-- another tenant, where the admin could sign in as the member. false for
-- every existing row (who chose an older password is not recorded).

-- +goose Up
ALTER TABLE users ADD COLUMN password_set_by_admin boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE users DROP COLUMN password_set_by_admin;
