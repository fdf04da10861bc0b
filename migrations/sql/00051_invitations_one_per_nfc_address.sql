-- One pending invitation per address and tenant, the address compared as
-- every query now matches an invitation to an account (invitations.
-- InvitedIsSQL): in Unicode NFC, then in lower case. invitations_pending_key
-- (00004) compared lower(email) of the stored spellings, so a pending
-- invitation left in another normal form (one migration 00012 had to
-- leave, one a pod of an earlier release wrote during a rollout) and one
-- sent since in NFC were two pending invitations to one address in one
-- tenant: POST /invitations made the second instead of answering 409
-- invitation_pending, and accepting one left the other pending, neither
-- acceptable nor resendable, its link live.
--
-- First, of each such group, the invitation sent last (the latest
-- expires_at: a resend moves it on; then the newest) stays pending and the
-- others are withdrawn, as a member's accept of one withdraws the others
-- now, each with its invitation.revoked audit row (no actor; data.email,
-- data.via invitation.created, data.kept the id of the one kept), as 00013
-- revokes what a change would have. Then the unique index on the NFC form
-- replaces that of lower(email). normalize() is immutable (PostgreSQL 13
-- or later in a UTF8 database, which 00012 requires).
--
-- Built CONCURRENTLY, as in 00047, 00049 and 00050, so that invitations
-- are created and accepted meanwhile; hence NO TRANSACTION. The index
-- enforces uniqueness on the rows written while it is built: a duplicate a
-- pod of an earlier release writes between the withdrawal and the build
-- fails the build, and the next attempt (the init container's restart)
-- withdraws it first. An attempt that fails part-way leaves an INVALID
-- index, dropped first by the next one.

-- +goose NO TRANSACTION
-- +goose Up
WITH ranked AS (
    SELECT id, tenant_id, email,
           first_value(id) OVER w AS kept,
           row_number() OVER w AS n
    FROM invitations
    WHERE status = 'pending'
    WINDOW w AS (PARTITION BY tenant_id, lower(normalize(email, NFC)) ORDER BY expires_at DESC, created_at DESC, id DESC)
), revoked AS (
    UPDATE invitations i SET status = 'revoked', updated_at = now()
    FROM ranked r
    WHERE i.id = r.id AND r.n > 1 AND i.status = 'pending'
    RETURNING i.id, i.tenant_id, i.email, r.kept
)
INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data)
SELECT tenant_id, NULL, 'invitation.revoked', 'invitation', id::text,
       jsonb_build_object('email', email, 'via', 'invitation.created', 'kept', kept::text)
FROM revoked;

DROP INDEX CONCURRENTLY IF EXISTS invitations_tenant_email_nfc_key;
CREATE UNIQUE INDEX CONCURRENTLY invitations_tenant_email_nfc_key
    ON invitations (tenant_id, lower(normalize(email, NFC))) WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS invitations_pending_key;

-- +goose Down
-- The withdrawn invitations stay withdrawn: each was a second pending
-- invitation to an address.
DROP INDEX CONCURRENTLY IF EXISTS invitations_pending_key;
CREATE UNIQUE INDEX CONCURRENTLY invitations_pending_key ON invitations (tenant_id, lower(email)) WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS invitations_tenant_email_nfc_key;
