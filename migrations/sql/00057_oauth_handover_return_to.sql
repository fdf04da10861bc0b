-- A hand-over code is bound to the app its sign-in ended at, as an
-- authorization code is to its redirect URI (RFC 6749 section 4.1.3): the
-- callback stores the flow's return_to with the code, and the exchange
-- (grant_type=oauth_handover) must name the same as redirect_uri. ''
-- is a sign-in without return_to (no allow-list: development), whose
-- exchange names none. NULL: a code written before this migration, or by
-- a pod of the previous release during the rollout, whose return_to was
-- not kept; its exchange is not checked against one (it lives 60 s).

-- +goose Up
ALTER TABLE oauth_handovers ADD COLUMN return_to text;

-- +goose Down
ALTER TABLE oauth_handovers DROP COLUMN return_to;
