-- The locks are Base·2^(attempts−threshold), at most Max: the power of two
-- was taken before the bound, and an address's count over every client,
-- which runs on while failures keep coming within the window, passed the
-- largest float8 after some 1,044 attempts (one guess each from the /64s
-- of one IPv6 /48 will do). The statement then failed with "value out of
-- range", and so did every sign-in to the address, its owner's included,
-- until the count went stale. The exponent is now bounded first: 2^60
-- seconds is past any Max.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION login_reserve(p_email bytea, p_ip text, p_window double precision,
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
    -- The window runs from the later of the last attempt and the end of
    -- the lock: a client that waits out a lock continues its count (and
    -- its next failure locks it again, for longer) instead of starting
    -- afresh with Threshold free guesses.
    n := CASE WHEN pair.last_attempt > since OR pair.locked_until > since THEN pair.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, least(n - p_threshold, 60)), p_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = p_ip;
    n := CASE WHEN acct.last_attempt > since OR acct.locked_until > since THEN acct.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_acct_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, least(n - p_acct_threshold, 60)), p_acct_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = '';
    RETURN 0;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION login_reserve(p_email bytea, p_ip text, p_window double precision,
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
    -- The window runs from the later of the last attempt and the end of
    -- the lock: a client that waits out a lock continues its count (and
    -- its next failure locks it again, for longer) instead of starting
    -- afresh with Threshold free guesses.
    n := CASE WHEN pair.last_attempt > since OR pair.locked_until > since THEN pair.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, n - p_threshold), p_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = p_ip;
    n := CASE WHEN acct.last_attempt > since OR acct.locked_until > since THEN acct.failures + 1 ELSE 1 END;
    UPDATE login_attempts SET failures = n, last_attempt = now(),
        locked_until = CASE WHEN n >= p_acct_threshold
                            THEN now() + make_interval(secs => least(p_base * power(2, n - p_acct_threshold), p_acct_max))
                            ELSE locked_until END
    WHERE email_hash = p_email AND client_ip = '';
    RETURN 0;
END;
$$;
-- +goose StatementEnd

