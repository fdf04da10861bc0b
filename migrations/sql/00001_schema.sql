-- The whole data model. Every tenant-scoped table carries tenant_id; every
-- foreign key and every lookup/ORDER BY path the code uses has an index
-- (coreapi's schema test lists them).

-- +goose Up
CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email              text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 320),
    display_name       text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
    password_hash      text,          -- NULL for accounts that only sign in through OAuth/OIDC
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    token_version      bigint NOT NULL DEFAULT 0,
    failed_logins      integer NOT NULL DEFAULT 0,
    last_failed_login  timestamptz,
    locked_until       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE memberships (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_id_idx ON memberships (user_id);
-- Keyset pagination of a tenant's members: ORDER BY created_at, user_id.
CREATE INDEX memberships_tenant_created_idx ON memberships (tenant_id, created_at, user_id);

CREATE TABLE roles (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    description  text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    permissions  text[] NOT NULL DEFAULT '{}',
    builtin      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- (tenant_id, name) also serves lookups by tenant and keyset ORDER BY name.
    CONSTRAINT roles_tenant_name_key UNIQUE (tenant_id, name),
    -- Target of membership_roles' composite key: a role can only be granted
    -- within its own tenant.
    CONSTRAINT roles_tenant_id_id_key UNIQUE (tenant_id, id)
);

CREATE TABLE membership_roles (
    tenant_id   uuid NOT NULL,
    user_id     uuid NOT NULL,
    role_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX membership_roles_role_idx ON membership_roles (tenant_id, role_id);
CREATE INDEX membership_roles_user_idx ON membership_roles (user_id);

CREATE TABLE identities (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider    text NOT NULL,
    subject     text NOT NULL,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identities_provider_subject_key UNIQUE (provider, subject)
);
CREATE INDEX identities_user_id_idx ON identities (user_id);

-- A session belongs to one user and is currently bound to one tenant
-- (switch-tenant moves it). Its refresh tokens form a rotation chain.
CREATE TABLE sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_agent      text NOT NULL DEFAULT '',
    ip              text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX sessions_user_created_idx ON sessions (user_id, created_at DESC, id DESC);
CREATE INDEX sessions_tenant_id_idx ON sessions (tenant_id);
-- The projection lists a user's recently revoked sessions.
CREATE INDEX sessions_user_revoked_idx ON sessions (user_id, revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL,
    parent_id    uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    replaced_by  uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    rotated_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_parent_id_idx ON refresh_tokens (parent_id);
CREATE INDEX refresh_tokens_replaced_by_idx ON refresh_tokens (replaced_by);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

-- OAuth/OIDC login state, shared by every replica; consumed once with
-- DELETE ... RETURNING, expired rows swept.
CREATE TABLE oauth_states (
    state_hash     bytea PRIMARY KEY,
    provider       text NOT NULL,
    code_verifier  text NOT NULL,
    nonce          text NOT NULL,
    redirect_uri   text NOT NULL,
    return_to      text NOT NULL DEFAULT '',
    tenant_id      uuid REFERENCES tenants (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);
CREATE INDEX oauth_states_tenant_id_idx ON oauth_states (tenant_id);

-- Transactional outbox: written in the same transaction as the change it
-- announces, published to NATS by the relay.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject       text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE audit_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    actor_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    action         text NOT NULL,
    target_type    text NOT NULL,
    target_id      text NOT NULL DEFAULT '',
    data           jsonb NOT NULL DEFAULT '{}',
    request_id     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Keyset pagination, newest first: ORDER BY id DESC within a tenant.
CREATE INDEX audit_events_tenant_id_idx ON audit_events (tenant_id, id DESC);
CREATE INDEX audit_events_actor_user_id_idx ON audit_events (actor_user_id);

-- +goose Down
DROP TABLE audit_events;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
DROP TABLE oauth_states;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE identities;
DROP TABLE membership_roles;
DROP TABLE roles;
DROP TABLE memberships;
DROP TABLE users;
DROP TABLE tenants;
