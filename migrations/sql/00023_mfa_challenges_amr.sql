-- A second factor completes the sign-in it follows: the challenge records
-- that sign-in's methods (amr), so the session it opens carries them with
-- otp added: ["pwd","otp"] after a password, ["fed","otp"] after an OIDC
-- provider's sign-in (which carried ["pwd"], as if a password had been
-- given). '{pwd}': challenges made before this migration all followed a
-- password, or an OIDC sign-in recorded as one.

-- +goose Up
ALTER TABLE mfa_challenges ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';

-- +goose Down
ALTER TABLE mfa_challenges DROP COLUMN amr;
