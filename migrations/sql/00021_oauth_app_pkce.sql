-- The OAuth hand-over code is bound to the app's flow (RFC 7636 between
-- the app and coreapi): authorize takes the app's S256 code_challenge,
-- kept with the state and then with the hand-over code, and the exchange
-- (grant_type=oauth_handover) needs its code_verifier. Without it, a code
-- from someone else's sign-in, sent to a victim's browser at return_to,
-- signed the victim's app into that person's account (login CSRF), and a
-- code read from a URL (history, a log) could be exchanged by anyone.
-- '' is no challenge: rows written before this migration, or by a sign-in
-- started without an allow-list (development).

-- +goose Up
ALTER TABLE oauth_states ADD COLUMN app_challenge text NOT NULL DEFAULT '';
ALTER TABLE oauth_handovers ADD COLUMN code_challenge text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE oauth_handovers DROP COLUMN code_challenge;
ALTER TABLE oauth_states DROP COLUMN app_challenge;
