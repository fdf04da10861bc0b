-- Email addresses are compared in Unicode NFC: "josé" typed with U+00E9 and
-- typed as "e" + U+0301 is one address. coreapi writes every address it is
-- given in NFC (mail.Canonical) and compares lower() of both sides. This
-- migration rewrites the addresses stored before in NFC: users,
-- invitations, action_tokens and identities (mail_queue rows are sent as
-- queued).
--
-- The unique indexes stay on lower(email) (one account per address, one
-- pending invitation per address and tenant): with every address in NFC,
-- one address is one key. An index on lower(normalize(email, NFC)) would
-- need every query to spell that expression, and could not be built while
-- a duplicate below is left.
--
-- An older coreapi could store one address twice, spelled two ways (two
-- accounts of one mailbox, or two pending invitations of one tenant). Only
-- one row can hold the NFC spelling. A row already in NFC keeps it; the
-- others are rewritten one by one, verified accounts first, then the
-- oldest, and a row whose NFC form has become another row's address (as
-- the unique index compares them) is left exactly as it is and reported
-- with RAISE WARNING, which `coreapi migrate up` prints and the server log
-- records. The migration does not fail: failing would hold back the
-- release that stops new duplicates, and which of two accounts of one
-- mailbox to keep (merge, delete, or give one another address) is the
-- operator's decision, not this file's (docs/operations.md). Until then a
-- left account keeps its sessions and linked OIDC identities, but sign-in
-- and password reset by address find the NFC account; a left invitation is
-- accepted as the NFC address's (invitations.Lock).
--
-- normalize_emails() does the rewrite, returns how many rows it left, and
-- stays in the schema: run `SELECT normalize_emails()` after resolving a
-- reported duplicate, and once after the rollout (pods of the previous
-- release may write a decomposed address until they are replaced).
--
-- normalize() and IS NFC NORMALIZED need PostgreSQL 13 or later and a UTF8
-- database: on anything else this migration stops, changing nothing.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF current_setting('server_version_num')::int < 130000 THEN
        RAISE EXCEPTION 'Tollgate needs PostgreSQL 13 or later (Unicode normalization of email addresses); this server is %',
            current_setting('server_version');
    END IF;
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'Tollgate needs a UTF8 database (Unicode normalization of email addresses); this one is %',
            current_setting('server_encoding');
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION normalize_emails() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r     record;
    other text;
    kept  integer := 0;
BEGIN
    -- Row by row, each in a subtransaction: a rewrite that would collide
    -- (or break the length CHECK) leaves that row alone. The WHERE of each
    -- UPDATE is checked again on the current row, so a concurrent change
    -- is never overwritten.
    FOR r IN
        SELECT id, email FROM users WHERE email IS NOT NFC NORMALIZED
        ORDER BY email_verified_at IS NULL, created_at, id
    LOOP
        BEGIN
            UPDATE users SET email = normalize(email, NFC), updated_at = now()
            WHERE id = r.id AND email IS NOT NFC NORMALIZED;
        EXCEPTION WHEN unique_violation OR check_violation THEN
            kept := kept + 1;
            SELECT string_agg(id::text, ', ') INTO other FROM users
            WHERE lower(email) = lower(normalize(r.email, NFC)) AND id <> r.id;
            RAISE WARNING 'normalize_emails: users % keeps its address % (not in NFC): %', r.id, quote_literal(r.email),
                coalesce('its NFC form is the address of users ' || other, 'its NFC form is too long');
        END;
    END LOOP;

    FOR r IN
        SELECT id, tenant_id, email FROM invitations WHERE email IS NOT NFC NORMALIZED
        ORDER BY created_at, id
    LOOP
        BEGIN
            UPDATE invitations SET email = normalize(email, NFC), updated_at = now()
            WHERE id = r.id AND email IS NOT NFC NORMALIZED;
        EXCEPTION WHEN unique_violation OR check_violation THEN
            kept := kept + 1;
            SELECT string_agg(id::text, ', ') INTO other FROM invitations
            WHERE tenant_id = r.tenant_id AND status = 'pending' AND lower(email) = lower(normalize(r.email, NFC)) AND id <> r.id;
            RAISE WARNING 'normalize_emails: invitations % keeps its address % (not in NFC): %', r.id, quote_literal(r.email),
                coalesce('its NFC form is the address of pending invitations ' || other || ' of the same tenant', 'its NFC form is too long');
        END;
    END LOOP;

    -- No unique index here: every row can be rewritten (a token whose NFC
    -- form would break the length CHECK is left; it expires within a day).
    UPDATE action_tokens SET email = normalize(email, NFC)
    WHERE email IS NOT NFC NORMALIZED AND char_length(normalize(email, NFC)) <= 320;
    UPDATE identities SET email = normalize(email, NFC)
    WHERE email IS NOT NFC NORMALIZED;

    RETURN kept;
END
$$;
-- +goose StatementEnd

SELECT normalize_emails();

-- +goose Down
-- The NFC spellings stay: each is the same address as before.
DROP FUNCTION normalize_emails();
