-- Multi-factor authentication: TOTP factors, recovery codes, sign-in
-- challenges, and what each session's authentication consisted of.
--
-- The TOTP secret is stored sealed (AES-256-GCM under a key named by
-- key_id, from MFA_ENCRYPTION_KEYS), never in plain text. last_step is the
-- last accepted time step: a code is accepted only for a later step, so a
-- code cannot be replayed within its window. Recovery codes and challenge
-- tokens are stored as SHA-256 hashes only.

-- +goose Up
CREATE TABLE mfa_totp (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    key_id        text NOT NULL,
    secret_sealed bytea NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active')),
    last_step     bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz
);

CREATE TABLE mfa_recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A password sign-in of a user with MFA: the mfa_token's hash, single use,
-- at most max attempts, short-lived.
CREATE TABLE mfa_challenges (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    attempts    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);
-- Deleting a user (a factor reset) or a tenant finds its challenges.
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_tenant_id_idx ON mfa_challenges (tenant_id);

-- How the session's holder last authenticated: access tokens carry these
-- as amr / auth_time, and a refresh keeps them. A session of an earlier
-- release was authenticated when it was created (its refreshes and tenant
-- switches authenticate no one), not when this runs: a route's
-- max_auth_age would take one signed in weeks ago for a fresh sign-in.
-- The ALTER holds the table until the commit, so every row updated here
-- is such a session.
ALTER TABLE sessions
    ADD COLUMN amr       text[] NOT NULL DEFAULT '{pwd}',
    ADD COLUMN auth_time timestamptz NOT NULL DEFAULT now();
UPDATE sessions SET auth_time = created_at;

-- A tenant may require every member to have a second factor.
ALTER TABLE tenants ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE tenants DROP COLUMN require_mfa;
ALTER TABLE sessions DROP COLUMN auth_time, DROP COLUMN amr;
DROP TABLE mfa_challenges;
DROP TABLE mfa_recovery_codes;
DROP TABLE mfa_totp;
