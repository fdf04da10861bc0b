-- Each mail queued about an account names it (user_id), whichever
-- address it goes to: the verification of an address to change to, the
-- notice of a move sent to the address left, a reset link to an address
-- the account has since left. An account's deletion deletes its mails by
-- this column as well as by its address of the moment, so that no copy of
-- an address it held waits for the retention sweep (7 days for a sent
-- mail, 30 for a parked one). ON DELETE CASCADE: a user row deleted any
-- other way (a service account's deletion, an operator by hand) takes its
-- mails with it too. NULL: a mail about no account (an invitation, which
-- is the tenant's, to an address; the confirmation of a deletion, whose
-- account is gone), and every row queued before this migration: no
-- backfill guesses from the address which account a mail was about (an
-- address changes hands); those rows go with the retention sweep, or with
-- a deletion by their address as before.
--
-- Not a transaction (NO TRANSACTION, as 00047): the column is added
-- without a default (no row rewritten), its index built CONCURRENTLY, so
-- that mails are queued and sent meanwhile, and only then the foreign
-- key, whose check has no row to look up (every user_id is NULL until
-- pods of this release start, after the migration); it holds writes to
-- users and mail_queue off for that moment only. An attempt that fails
-- part-way (lock_timeout) leaves the column (IF NOT EXISTS), an INVALID
-- index or no constraint (each dropped first) for the next one to
-- finish. Pods of the previous release neither read nor write user_id:
-- their mails name no account, and an account's deletion they run
-- deletes the mails of it that the new pods queued all the same (the
-- cascade).

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE mail_queue ADD COLUMN IF NOT EXISTS user_id uuid;
DROP INDEX CONCURRENTLY IF EXISTS mail_queue_user_id_idx;
CREATE INDEX CONCURRENTLY mail_queue_user_id_idx ON mail_queue (user_id) WHERE user_id IS NOT NULL;
ALTER TABLE mail_queue DROP CONSTRAINT IF EXISTS mail_queue_user_id_fkey;
ALTER TABLE mail_queue ADD CONSTRAINT mail_queue_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;

-- +goose Down
ALTER TABLE mail_queue DROP COLUMN IF EXISTS user_id;
