-- Account lifecycle: verified email addresses, one-time tokens (email
-- verification, password reset), invitations that need the invitee's
-- consent, the outgoing mail queue, and shared rate-limit counters.

-- +goose Up
-- NULL: the address was never proven. Existing accounts start unverified.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- The user's token version a session was opened under. A refresh of a
-- session older than the user's current version is refused, so a sign-in
-- that raced a password reset cannot outlive it. NULL (sessions from
-- before this column) is not checked.
ALTER TABLE sessions ADD COLUMN token_version bigint;

-- One-time tokens mailed as links. Only the SHA-256 of the token is kept;
-- a token is consumed with DELETE ... RETURNING (single use).
CREATE TABLE action_tokens (
    token_hash  bytea PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The address the token proves (for verify_email: the new address of
    -- an email change, or the current one).
    email       text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 320),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX action_tokens_user_purpose_idx ON action_tokens (user_id, purpose, created_at DESC);
CREATE INDEX action_tokens_expires_at_idx ON action_tokens (expires_at);

-- Invitations into a tenant. A member is added only when the invitee
-- accepts with the mailed token (proof of the mailbox) and, for an
-- existing account, its own credentials.
CREATE TABLE invitations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 320),
    roles        text[] NOT NULL,
    token_hash   bytea NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'revoked', 'expired')),
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    accepted_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CONSTRAINT invitations_token_hash_key UNIQUE (token_hash)
);
-- One pending invitation per address and tenant.
CREATE UNIQUE INDEX invitations_pending_key ON invitations (tenant_id, lower(email)) WHERE status = 'pending';
-- Keyset pages of a tenant's invitations: ORDER BY created_at, id.
CREATE INDEX invitations_tenant_created_idx ON invitations (tenant_id, created_at, id);
-- A user's own pending invitations (GET /users/me/invitations).
CREATE INDEX invitations_email_pending_idx ON invitations (lower(email)) WHERE status = 'pending';
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);
CREATE INDEX invitations_accepted_by_idx ON invitations (accepted_by);

-- Outgoing mail, written in the transaction of the change that causes it
-- and sent by a worker on every replica (claimed with FOR UPDATE SKIP
-- LOCKED and a lease). token holds the raw one-time token only until the
-- message is sent or parked.
CREATE TABLE mail_queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL,
    to_address       text NOT NULL CHECK (char_length(to_address) BETWEEN 3 AND 320),
    data             jsonb NOT NULL DEFAULT '{}',
    token            text,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'parked')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX mail_queue_due_idx ON mail_queue (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX mail_queue_sent_at_idx ON mail_queue (sent_at) WHERE status = 'sent';

-- Fixed-window rate-limit counters shared by every replica. The key is the
-- SHA-256 of the limited thing (e.g. "forgot:addr:" + address), so no
-- address is stored.
CREATE TABLE rate_limits (
    key           bytea PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL
);
CREATE INDEX rate_limits_window_start_idx ON rate_limits (window_start);

-- +goose Down
DROP TABLE rate_limits;
DROP TABLE mail_queue;
DROP TABLE invitations;
DROP TABLE action_tokens;
ALTER TABLE sessions DROP COLUMN token_version;
ALTER TABLE users DROP COLUMN email_verified_at;
