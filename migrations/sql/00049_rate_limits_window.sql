-- Each rate-limit counter records its window (window_s, in seconds), and
-- the sweep deletes a counter once two of its windows have passed since
-- its window started: the sliding count weighs in the window before, and
-- nothing stored counts after that. Without it the sweep knew no row's
-- window and kept every counter 48 hours, twice the longest window: a
-- minute's counter (OAuth sign-ins started per client IP) stayed 2,880
-- times as long as it counts, and a limit with a window over a day would
-- have been forgotten while its hits still counted.
--
-- The sweep's predicate, window_start + 2 × window_s < now(), reads
-- rate_limits_kept_until_idx, which replaces the index of window_start.
-- Indexed in UTC: a timestamp with a time zone plus an interval depends on
-- the session's zone (days across a DST change), so PostgreSQL indexes no
-- such sum; the timestamp in UTC plus seconds does not depend on it.
--
-- window_s has a default, so adding it rewrites no row, and an existing
-- row is a day's window, kept 48 hours as before: a row of the previous
-- version is swept no sooner than it was. During a rollout a replica of
-- the previous version neither reads nor writes window_s: its inserts
-- take the default (kept 48 hours, as it kept them), and its updates
-- leave the window a new replica wrote, which is the window of the key's
-- limit in both versions. Its sweep still deletes counters 48 hours after
-- their window started, which no limit of the previous version still
-- counts, reading the table instead of the index dropped here.
--
-- Built CONCURRENTLY, as in 00047, so that the hits counted meanwhile
-- (every sign-in) are not held off while the index reads the table; hence
-- NO TRANSACTION. An attempt that fails part-way leaves the column (IF NOT
-- EXISTS) or an INVALID index (dropped first) for the next one to finish.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE rate_limits ADD COLUMN IF NOT EXISTS window_s integer NOT NULL DEFAULT 86400;
DROP INDEX CONCURRENTLY IF EXISTS rate_limits_kept_until_idx;
CREATE INDEX CONCURRENTLY rate_limits_kept_until_idx
    ON rate_limits (((window_start AT TIME ZONE 'UTC') + make_interval(secs => 2 * window_s)));
DROP INDEX CONCURRENTLY IF EXISTS rate_limits_window_start_idx;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS rate_limits_window_start_idx;
CREATE INDEX CONCURRENTLY rate_limits_window_start_idx ON rate_limits (window_start);
DROP INDEX CONCURRENTLY IF EXISTS rate_limits_kept_until_idx;
ALTER TABLE rate_limits DROP COLUMN IF EXISTS window_s;
