-- An external identity is the provider's issuer and subject together
-- (OpenID Connect Core 5.7: a subject is unique only within its issuer).
-- Identities were keyed by the provider's configured name alone, so once
-- OIDC_<NAME>_ISSUER pointed at another issuer (another IdP, realm or
-- organisation under the same name), a user of the new issuer whose
-- subject equalled one linked under the old issuer signed into that
-- account. The issuer is now recorded with each identity, and a sign-in
-- through another issuer never enters it. NULL: linked before this
-- migration; the first sign-in through it records its issuer.

-- +goose Up
ALTER TABLE identities ADD COLUMN issuer text;

-- +goose Down
ALTER TABLE identities DROP COLUMN issuer;
