-- A started OIDC flow may link the provider to a signed-in owner's account
-- (POST /users/me/identities/{provider}) rather than sign in: the state
-- then names the account and the session that asked for it, which the
-- callback links and checks again, whatever the request says. NULL: a
-- sign-in (every row written before this migration). A link's row holds
-- its browser cookie's hash under another prefix than a sign-in's, so a
-- pod of the previous release, which reads no link_user_id, finds no
-- state for it (400 invalid_state) and signs nobody in through a link.

-- +goose Up
ALTER TABLE oauth_states
    ADD COLUMN link_user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    ADD COLUMN link_session_id uuid;
CREATE INDEX oauth_states_link_user_id_idx ON oauth_states (link_user_id) WHERE link_user_id IS NOT NULL;

-- +goose Down
DROP INDEX oauth_states_link_user_id_idx;
ALTER TABLE oauth_states DROP COLUMN link_session_id, DROP COLUMN link_user_id;
