-- Indexes for the predicates of the sweeps that had none: the API keys
-- revoked or expired a week ago (each of the two columns its own partial
-- index; the sweep's OR of them is a BitmapOr of both), the sessions
-- revoked long enough ago (sessions_user_revoked_idx leads with user_id,
-- and expires_at has its own index already), and the parked mails past
-- their retention (the sent ones have mail_queue_sent_at_idx). Without
-- them each sweep read the whole table every round, however few rows it
-- deleted. Partial: the live rows, most of them, are not in them.
--
-- Built CONCURRENTLY, so that the tables stay writable while they are
-- (a plain CREATE INDEX holds off every sign-in and every key's use for
-- as long as it reads the table). CREATE INDEX CONCURRENTLY cannot run in
-- a transaction, hence NO TRANSACTION: this was the first migration that
-- is not a transaction of its own (00049, 00050, 00051, 00060, 00062 and
-- 00064 are not either, for the same reason). One that fails part-way (it waited longer
-- than `coreapi migrate up`'s lock_timeout for an older transaction,
-- which it must outlast; the process was stopped) can leave an INVALID
-- index behind, which IF NOT EXISTS would then take for the built one:
-- each index is therefore dropped first, and the next attempt builds
-- again what the failed one left.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS api_keys_revoked_at_idx;
CREATE INDEX CONCURRENTLY api_keys_revoked_at_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS api_keys_expires_at_idx;
CREATE INDEX CONCURRENTLY api_keys_expires_at_idx ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS sessions_revoked_at_idx;
CREATE INDEX CONCURRENTLY sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_parked_idx;
CREATE INDEX CONCURRENTLY mail_queue_parked_idx ON mail_queue (created_at) WHERE status = 'parked';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_parked_idx;
DROP INDEX CONCURRENTLY IF EXISTS sessions_revoked_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS api_keys_expires_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS api_keys_revoked_at_idx;
