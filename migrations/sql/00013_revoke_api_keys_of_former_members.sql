-- API keys act as the member who created them, in its tenant. Removing a
-- member now revokes their keys in the same transaction (audited, announced
-- to the proxies). Before that, a removed member's keys stayed live: refused
-- only while the membership was gone, and working again if the person was
-- ever added back. This migration revokes every live key whose creator is no
-- longer a member of its tenant, as a removal now does: each with its
-- api_key.revoked audit row (no actor, data.via "member.removed") and its
-- invalidation in the outbox, so proxies still holding one drop it at once.

-- +goose Up
WITH revoked AS (
    UPDATE api_keys k SET revoked_at = now()
    WHERE k.revoked_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = k.tenant_id AND m.user_id = k.user_id)
    RETURNING k.id, k.tenant_id, k.public_id, k.kind
), audited AS (
    INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data)
    SELECT tenant_id, NULL, 'api_key.revoked', 'api_key', id::text,
           jsonb_build_object('public_id', public_id, 'kind', kind, 'via', 'member.removed')
    FROM revoked
)
INSERT INTO outbox (subject, payload)
SELECT 'auth.invalidate.apikey.' || public_id,
       jsonb_build_object('reason', 'api_key.revoked', 'at', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
FROM revoked;

-- +goose Down
-- The keys stay revoked: their creators had left the tenant.
SELECT 1;
