-- An OIDC sign-in may ask the provider to have authenticated the user
-- within max_age seconds (OpenID Connect Core 3.1.2.1), as an app does to
-- answer a refusal for want of a recent sign-in (RFC 9470): the provider
-- then authenticates the user again if its own session is older, and its
-- ID token says when (auth_time), which the callback checks against the
-- max_age the flow asked for. NULL: none asked (every row written before
-- this migration).

-- +goose Up
ALTER TABLE oauth_states ADD COLUMN max_age integer;

-- +goose Down
ALTER TABLE oauth_states DROP COLUMN max_age;
