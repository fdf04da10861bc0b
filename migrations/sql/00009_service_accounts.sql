-- Service accounts: non-human members of one tenant, holding roles like
-- any member, that obtain access tokens with the OAuth 2.0
-- client_credentials grant.
--
-- A service account is a users row of kind 'service' (no password, a
-- reserved address under service-accounts.invalid, which no mail or
-- identity provider can reach) plus a membership and its roles, so that
-- projections, role and permission checks treat it like a member. Its
-- client secrets are stored only as a peppered HMAC-SHA-256 (they carry
-- 256 random bits: a slow hash would add nothing); several may be live at
-- once, so that rotation overlaps.

-- +goose Up
ALTER TABLE users ADD COLUMN kind text NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'service'));

CREATE TABLE service_accounts (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Keyset pagination of a tenant's service accounts.
CREATE INDEX service_accounts_tenant_created_idx ON service_accounts (tenant_id, created_at, user_id);
CREATE INDEX service_accounts_created_by_idx ON service_accounts (created_by);

CREATE TABLE service_account_secrets (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES service_accounts (user_id) ON DELETE CASCADE,
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    CONSTRAINT service_account_secrets_hash_key UNIQUE (secret_hash)
);
CREATE INDEX service_account_secrets_user_id_idx ON service_account_secrets (user_id, created_at);

-- +goose Down
DROP TABLE service_account_secrets;
DROP TABLE service_accounts;
DELETE FROM users WHERE kind = 'service';
ALTER TABLE users DROP COLUMN kind;
