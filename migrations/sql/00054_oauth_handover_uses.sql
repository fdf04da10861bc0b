-- A hand-over code presented again after its exchange must be refused and
-- should end what the first exchange handed out (RFC 6749 section 4.1.2,
-- RFC 9700 section 4.5): a code read from a URL, a log or a Referer and
-- replayed, or the app's own exchange coming second to a thief's. The
-- exchange still consumes the code with DELETE … RETURNING; it now also
-- records the code's hash here, with the session it opened, so that a
-- second presentation finds which session to end. A row lives until its
-- expires_at (a while past the code's own), then the sweep deletes it; it
-- goes with its session too. A pod of the previous release deletes from
-- oauth_handovers only, finds no code there, and refuses the replay as an
-- unknown code without ending the session.

-- +goose Up
CREATE TABLE oauth_handover_uses (
    code_hash   bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX oauth_handover_uses_session_idx ON oauth_handover_uses (session_id);
CREATE INDEX oauth_handover_uses_expiry_idx ON oauth_handover_uses (expires_at);

-- +goose Down
DROP TABLE oauth_handover_uses;
