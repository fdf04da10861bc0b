-- API keys: long-lived machine credentials of one tenant, acting as the
-- user who created them (kind 'tenant': created by an admin holding
-- api-keys:write; 'personal': a member's own).
--
-- The secret is stored only as HMAC-SHA256 under a server-side pepper
-- (API_KEY_PEPPER, never in the database): a copy of the table is not a
-- list of usable keys. public_id is the 16 characters after "tg_" in the
-- secret; it names the key in lookups and in the proxies' caches.
-- permissions are the key's own; what it may do is those intersected with
-- its user's current permissions in the tenant (docs/security.md).

-- +goose Up
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    public_id     text NOT NULL CHECK (public_id ~ '^[a-z0-9]{16}$'),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('tenant', 'personal')),
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    permissions   text[] NOT NULL DEFAULT '{}',
    secret_hash   bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    CONSTRAINT api_keys_public_id_key UNIQUE (public_id)
);
-- A tenant's keys, newest first; a user's keys (deleting a user, listing
-- personal keys).
CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at DESC, id);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- +goose Down
DROP TABLE api_keys;
