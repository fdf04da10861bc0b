-- A password is hashed in Unicode NFKC; a hash stored before passwords were
-- normalized holds the password as it was typed. Not knowing which a row
-- holds, a check of a password that NFKC changes ran argon2 twice (the NFKC
-- form, then the form as typed), so anyone could double the cost of each
-- guess by sending a password in another Unicode form.
--
-- password_nfkc_hash vouches for the hash it equals: coreapi writes it with
-- every hash it makes (all in NFKC), and sets it to the stored hash when a
-- sign-in's password matches that hash's NFKC form. A row whose
-- password_hash is something else (every row before this migration, a hash
-- written by a pod of the previous release or by hand) may hold a password
-- as typed, and is checked both ways until its next sign-in vouches for it
-- or replaces it. Kept as the hash itself rather than a flag, so that no
-- write of password_hash that forgets it can leave a stale promise.

-- +goose Up
ALTER TABLE users ADD COLUMN password_nfkc_hash text;

-- +goose Down
ALTER TABLE users DROP COLUMN password_nfkc_hash;
