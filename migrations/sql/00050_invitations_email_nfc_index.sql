-- GET /users/me/invitations matches an invitation to the account as the
-- accept does: the invited address in Unicode NFC, then both in lower
-- case (invitations.InvitedIsSQL). It compared lower() of the stored
-- spellings, so an invitation stored in another normal form (one
-- migration 00012 had to leave, one a pod of an earlier release wrote
-- during a rollout) was accepted by the account of its NFC spelling but
-- never listed to it. This index, on the expression the list now reads,
-- replaces that of lower(email), which no query reads any more.
-- normalize() is immutable (PostgreSQL 13 or later in a UTF8 database,
-- which 00012 requires).
--
-- Built CONCURRENTLY, as in 00047 and 00049, so that invitations are
-- created and accepted meanwhile; hence NO TRANSACTION. An attempt that
-- fails part-way leaves an INVALID index, dropped first by the next one.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS invitations_email_nfc_idx;
CREATE INDEX CONCURRENTLY invitations_email_nfc_idx
    ON invitations (lower(normalize(email, NFC))) WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS invitations_email_pending_idx;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS invitations_email_pending_idx;
CREATE INDEX CONCURRENTLY invitations_email_pending_idx ON invitations (lower(email)) WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS invitations_email_nfc_idx;
