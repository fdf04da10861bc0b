-- An audit event written for a request authenticated by an API key names
-- the key (api_key_id), beside the user it acts as (actor_user_id): the
-- log of a tenant whose key leaked tells what that key changed from what
-- its creator changed by hand or through another key. NULL: an event of
-- any other caller, and every event written before this migration (the
-- key of an older event is not known). No foreign key: as the actor's id
-- (00020), the key's stays in its events when the key's row is deleted
-- (with its creator's account).
--
-- Not a transaction (NO TRANSACTION, as 00047 and 00060): the column is
-- added without a default (no row rewritten), and its index, which finds
-- a key's events among the tenant's, is built CONCURRENTLY, so that
-- events are written meanwhile; it holds only the key's events. An
-- attempt that fails part-way leaves the column (IF NOT EXISTS) or an
-- INVALID index (dropped first) for the next one to finish. Pods of the
-- previous release neither read nor write the column: the events they
-- write name no key.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS api_key_id uuid;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_api_key_id_idx;
CREATE INDEX CONCURRENTLY audit_events_api_key_id_idx ON audit_events (api_key_id) WHERE api_key_id IS NOT NULL;

-- +goose Down
ALTER TABLE audit_events DROP COLUMN IF EXISTS api_key_id;
