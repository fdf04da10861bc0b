-- Sliding-window rate limits. A key's row keeps, beside the hits of its
-- current window, those of the window before (prev_hits), which count as
-- much as the sliding window ending now still overlaps it: prev_hits ×
-- (1 − elapsed/window) + hits. Counted in fixed windows, N hits just
-- before a window's end and N just after passed within moments: 2,000
-- argon2 hashes in a minute under PASSWORD_CHECKS_PER_HOUR=1000, twice an
-- address's mails. refused is how the counting statement tells its caller
-- whether the hit was counted: RETURNING sees only the row written, and a
-- refused hit leaves the hits as they were.
--
-- Both have a default, so adding them rewrites no row, and an existing
-- row is a window with nothing before it. During a rollout a replica of
-- the previous version goes on counting fixed windows in window_start
-- and hits and neither reads nor writes the new columns (its inserts take
-- the defaults), so nothing of it breaks: the hits a new replica counts
-- are hits to it, a window a new replica moved on (window_start one
-- window later, in the past) is one it has not ended yet, and neither
-- kind lets more than N through in one window. A window an old replica
-- starts afresh keeps the prev_hits of an earlier one, which a new
-- replica weighs in (stricter than it should, until that window ends);
-- an old replica's sweep deletes a counter a day after its window
-- started, so a day-long limit forgets its previous day early.

-- +goose Up
ALTER TABLE rate_limits
    ADD COLUMN prev_hits integer NOT NULL DEFAULT 0,
    ADD COLUMN refused boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE rate_limits DROP COLUMN refused, DROP COLUMN prev_hits;
