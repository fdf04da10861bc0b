-- Sign-in attempts are reserved before a password is checked, and OAuth
-- flows are bound to the browser that started them.
--
-- login_attempts replaces login_failures (00002) and the users.failed_logins
-- counters: one row per (address, client IP) and one per address (client_ip
-- = ''), both keyed by the SHA-256 of the normalised address, whether or not
-- an account has it. login_reserve() checks the locks and counts the attempt
-- in one statement, under the rows' locks, so concurrent guesses cannot slip
-- past a lock that is being set.

-- +goose Up
CREATE TABLE login_attempts (
    email_hash    bytea NOT NULL,
    client_ip     text NOT NULL,  -- '' is the row of the whole address
    failures      integer NOT NULL DEFAULT 0,
    last_attempt  timestamptz NOT NULL DEFAULT '-infinity',
    locked_until  timestamptz,
    PRIMARY KEY (email_hash, client_ip)
);
-- The sweeper deletes rows whose window and lock have passed.
CREATE INDEX login_attempts_last_attempt_idx ON login_attempts (last_attempt);

DROP TABLE login_failures;

-- login_reserve counts one attempt for (p_email, p_ip) unless a lock
-- applies, and returns 0 (go ahead: the attempt is counted) or the seconds
-- the caller must wait (nothing counted). A success resets the pair row
-- (login_release). The pair row locks from p_threshold attempts within
-- p_window for p_base·2^(n−p_threshold) seconds, at most p_max. The address
-- row counts attempts from every client; from p_acct_threshold on it locks
-- for at most p_acct_max, and that lock holds only for clients that already
-- failed for this address in the window, so a stranger's guesses cannot lock
-- the owner out of a clean client.
-- +goose StatementBegin
CREATE FUNCTION login_reserve(p_email bytea, p_ip text, p_window double precision,
                              p_threshold integer, p_base double precision, p_max double precision,
                              p_acct_threshold integer, p_acct_max double precision)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    acct  login_attempts;
    pair  login_attempts;
    since timestamptz := now() - make_interval(secs => p_window);
    n     integer;
BEGIN
    -- Create or lock both rows (the no-op update takes the row lock, so the
    -- sweeper cannot delete them under us), in one order for every caller:
    -- the address row, then the pair.
    INSERT INTO login_attempts (email_hash, client_ip) VALUES (p_email, ''), (p_email, p_ip)
    ON CONFLICT (email_hash, client_ip) DO UPDATE SET failures = login_attempts.failures;
    SELECT * INTO STRICT acct FROM login_attempts WHERE email_hash = p_email AND client_ip = '';
    SELECT * INTO STRICT pair FROM login_attempts WHERE email_hash = p_email AND client_ip = p_ip;
    IF pair.locked_until > now() THEN
        RETURN greatest(ceil(extract(epoch FROM pair.locked_until - now())), 1)::int;
    END IF;
    IF acct.locked_until > now() AND pair.failures > 0 AND pair.last_attempt > since THEN
        RETURN greatest(ceil(extract(epoch FROM acct.locked_until - now())), 1)::int;
    END IF;
    n := CASE WHEN pair.last_attempt > since THEN pair.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, n - p_threshold), p_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = p_ip;
    n := CASE WHEN acct.last_attempt > since THEN acct.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_acct_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, n - p_acct_threshold), p_acct_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = '';
    RETURN 0;
END;
$$;
-- +goose StatementEnd

-- The OAuth state is bound to the browser that started the flow: the hash
-- of a random value set in a __Host- cookie. The callback must present it.
-- Rows of flows in progress during the upgrade have none and fail.
ALTER TABLE oauth_states ADD COLUMN browser_hash bytea;

-- One-time hand-over codes: the OAuth callback redirects the browser to the
-- app's return_to with a code, which the app exchanges (grant_type
-- oauth_handover) for tokens of the session the callback opened. Only the
-- hash is stored; consumed once with DELETE … RETURNING; 60 s.
CREATE TABLE oauth_handovers (
    code_hash   bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX oauth_handovers_user_id_idx ON oauth_handovers (user_id);
CREATE INDEX oauth_handovers_session_id_idx ON oauth_handovers (session_id);
CREATE INDEX oauth_handovers_expires_at_idx ON oauth_handovers (expires_at);

-- +goose Down
DROP TABLE oauth_handovers;
ALTER TABLE oauth_states DROP COLUMN browser_hash;
DROP FUNCTION login_reserve(bytea, text, double precision, integer, double precision, double precision, integer, double precision);
DROP TABLE login_attempts;
CREATE TABLE login_failures (
    email_hash         bytea PRIMARY KEY,
    failed_logins      integer NOT NULL DEFAULT 0,
    last_failed_login  timestamptz NOT NULL DEFAULT '-infinity',
    locked_until       timestamptz
);
CREATE INDEX login_failures_last_failed_login_idx ON login_failures (last_failed_login);
