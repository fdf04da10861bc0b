-- While an address is locked (AccountThreshold failures within the window
-- from every client together), its lock holds back only the clients that
-- already failed for it, so that guessing from elsewhere cannot lock its
-- owner out. An IPv6 client is its /64, and one /48 holds 65,536 of them,
-- each a client that never failed: one guess per /64 while the address
-- was locked. login_reserve now also keeps a row per (address, wider
-- network), the client's /48 for IPv6 (p_net; NULL for an IPv4 client,
-- counted as before: a /24 is often many customers behind one carrier
-- NAT), counted on every attempt like the pair but never locked on its
-- own. While the address is locked, a client waits if its pair or its
-- network failed for the address within the window: one guess per /48 and
-- lock instead of 65,536, and a client of a network that never failed (the
-- owner elsewhere) still passes. Rows are locked in one order: the
-- address's, the pair's, the network's.
--
-- The function of eight arguments stays, as a call of the new one without
-- a network, for the pods of the previous release that serve during the
-- rollout. Down drops the new one and restores 00045's; network rows left
-- behind are read by nothing and swept when their window has passed.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION login_reserve(p_email bytea, p_ip text, p_net text, p_window double precision,
                              p_threshold integer, p_base double precision, p_max double precision,
                              p_acct_threshold integer, p_acct_max double precision)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    acct  login_attempts;
    pair  login_attempts;
    net   login_attempts;
    since timestamptz := now() - make_interval(secs => p_window);
    n     integer;
BEGIN
    -- Create or lock the rows (the no-op update takes the row lock, so the
    -- sweeper cannot delete them under us), in one order for every caller:
    -- the address row, the pair, then the network.
    INSERT INTO login_attempts (email_hash, client_ip) VALUES (p_email, ''), (p_email, p_ip)
    ON CONFLICT (email_hash, client_ip) DO UPDATE SET failures = login_attempts.failures;
    IF p_net IS NOT NULL THEN
        INSERT INTO login_attempts (email_hash, client_ip) VALUES (p_email, p_net)
        ON CONFLICT (email_hash, client_ip) DO UPDATE SET failures = login_attempts.failures;
    END IF;
    SELECT * INTO STRICT acct FROM login_attempts WHERE email_hash = p_email AND client_ip = '';
    SELECT * INTO STRICT pair FROM login_attempts WHERE email_hash = p_email AND client_ip = p_ip;
    IF p_net IS NOT NULL THEN
        SELECT * INTO STRICT net FROM login_attempts WHERE email_hash = p_email AND client_ip = p_net;
    END IF;
    IF pair.locked_until > now() THEN
        RETURN greatest(ceil(extract(epoch FROM pair.locked_until - now())), 1)::int;
    END IF;
    IF acct.locked_until > now() AND ((pair.failures > 0 AND pair.last_attempt > since)
                                      OR coalesce(net.failures > 0 AND net.last_attempt > since, false)) THEN
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
    IF p_net IS NOT NULL THEN
        UPDATE login_attempts SET last_attempt = now(),
            failures = CASE WHEN net.last_attempt > since THEN net.failures + 1 ELSE 1 END
        WHERE email_hash = p_email AND client_ip = p_net;
    END IF;
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION login_reserve(p_email bytea, p_ip text, p_window double precision,
                              p_threshold integer, p_base double precision, p_max double precision,
                              p_acct_threshold integer, p_acct_max double precision)
RETURNS integer LANGUAGE sql AS $$
    SELECT login_reserve(p_email, p_ip, NULL::text, p_window, p_threshold, p_base, p_max,
                         p_acct_threshold, p_acct_max);
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION login_reserve(bytea, text, text, double precision, integer, double precision, double precision, integer, double precision);
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
