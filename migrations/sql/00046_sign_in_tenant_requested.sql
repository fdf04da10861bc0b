-- Whether a sign-in waiting for its second factor named its tenant. One
-- that named none lands where a sign-in naming none would land when its
-- code is given: the user's oldest active membership in an active
-- tenant, which may no longer be the one its first step picked (the user
-- was removed from it, or disabled there, meanwhile). One that named its
-- tenant is refused then. A hand-over code carries it from an OIDC
-- provider's callback to the challenge its exchange makes for a user with
-- a second factor. true for existing rows: they were bound to their
-- tenant, as before.

-- +goose Up
ALTER TABLE mfa_challenges ADD COLUMN tenant_requested boolean NOT NULL DEFAULT true;
ALTER TABLE oauth_handovers ADD COLUMN tenant_requested boolean NOT NULL DEFAULT true;

-- +goose Down
ALTER TABLE oauth_handovers DROP COLUMN tenant_requested;
ALTER TABLE mfa_challenges DROP COLUMN tenant_requested;
