-- Failed sign-ins for email addresses that match no account. Keyed by the
-- SHA-256 of the normalised address (the address itself is not stored), so
-- unknown addresses lock out exactly as real accounts do (users.failed_logins)
-- and a 429 says nothing about whether an account exists.

-- +goose Up
CREATE TABLE login_failures (
    email_hash         bytea PRIMARY KEY,
    failed_logins      integer NOT NULL DEFAULT 0,
    last_failed_login  timestamptz NOT NULL DEFAULT '-infinity',
    locked_until       timestamptz
);
-- The sweeper deletes rows whose window and lock have passed.
CREATE INDEX login_failures_last_failed_login_idx ON login_failures (last_failed_login);

-- +goose Down
DROP TABLE login_failures;
