-- Indexes for the statements that look up queued mails while the queue
-- may hold a backlog (an SMTP outage): an account's deletion, which
-- deletes the mails to its address (lower(to_address)) and those that
-- carry one of its one-time tokens, and every statement that ends a
-- one-time token or an invitation's (a sign-up's newer link, a password
-- change, a reset, a withdrawal, a resend), which deletes the mails still
-- to go that carry it (mail.DropUnsentSQL). Without them each of these
-- read the whole queue and hashed every token in it, however few rows it
-- deleted: the cost of a sign-up or a revocation grew with the backlog.
--
-- A mail's token is matched by its digest, SHA-256 of its UTF-8 bytes,
-- which is how action_tokens and invitations store theirs
-- (onetime.Hash). convert_to() is only STABLE (a conversion depends on
-- the database's encoding), so no index can hold
-- sha256(convert_to(token, 'UTF8')); mail_token_digest() computes exactly
-- that and is declared IMMUTABLE, which holds for a database whose encoding
-- never changes (UTF8, which 00012 requires). The statements compare
-- mail_token_digest(m.token), the expression of the index. Partial: a row
-- with no token (sent, parked, or a kind without a link) is never looked
-- up by one.
--
-- Not a transaction (NO TRANSACTION, as 00047): both indexes are built
-- CONCURRENTLY, so that mails are queued and sent meanwhile; each is
-- dropped first, so that the next attempt builds again an INVALID one a
-- failed attempt (lock_timeout) left. Pods of the previous release keep
-- their statements (sha256(convert_to(...)), which the index does not
-- serve, and lower(to_address), which it does): same results.

-- +goose NO TRANSACTION
-- +goose Up
CREATE OR REPLACE FUNCTION mail_token_digest(token text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8')) $$;
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_to_address_lower_idx;
CREATE INDEX CONCURRENTLY mail_queue_to_address_lower_idx ON mail_queue (lower(to_address));
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_token_digest_idx;
CREATE INDEX CONCURRENTLY mail_queue_token_digest_idx ON mail_queue (mail_token_digest(token)) WHERE token IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_token_digest_idx;
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_to_address_lower_idx;
DROP FUNCTION IF EXISTS mail_token_digest(text);
