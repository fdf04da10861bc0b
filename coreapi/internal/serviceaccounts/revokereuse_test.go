package serviceaccounts_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// TestRevocationWithARotatedTokenIsReuse: a refresh token rotated before
// the grace window, presented to the revocation endpoint, is a reuse as
// it is at the token endpoint: whoever presents it holds a stolen (or
// left behind) token of the chain, not the session's. The session ends
// as a reuse, audited as session.refresh_token_reused with the request
// and its client IP, never as a sign-out of the user's own (token.revoked
// with the user as actor), which hid the theft. The session's live token,
// or one rotated within the grace window, still signs out.
func TestRevocationWithARotatedTokenIsReuse(t *testing.T) {
	e := start(t, startOpts{})
	refresh := func(tok string) tokens {
		t.Helper()
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tok})
		if r.Status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.Status, r.Body)
		}
		var next tokens
		r.JSON(t, &next)
		return next
	}
	revoke := func(tok, rid string, hdr http.Header) {
		t.Helper()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set(requestid.Header, rid)
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/revoke", Body: url.Values{"token": {tok}}.Encode(),
			ContentType: "application/x-www-form-urlencoded", Header: hdr, ClientIP: "198.51.100.23"})
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
	}
	owner, ownerID := e.owner(t, "owner@example.com")
	a := e.createAccount(t, ownerID, "revoker")
	s := e.createSecret(t, ownerID, a.ID)

	for _, c := range []struct {
		name string
		hdr  func() http.Header
	}{
		{"by its holder", func() http.Header { return nil }},
		{"by a client of its tenant", func() http.Header { return basic(s.ClientID, s.ClientSecret) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A second session of the owner's: the first one made the client.
			r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "owner@example.com", "password": pw})
			if r.Status != http.StatusOK {
				t.Fatalf("sign-in: %d %s", r.Status, r.Body)
			}
			var tk tokens
			r.JSON(t, &tk)
			sid := claimsOf(t, tk.AccessToken)["sid"].(string)
			next := refresh(tk.RefreshToken)
			e.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, sessions.Hash(tk.RefreshToken))
			rid := "revoke-reuse-" + sid
			revoke(tk.RefreshToken, rid, c.hdr())
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = $2`, sid, sessions.ReasonReuse); n != 1 {
				t.Errorf("the session was not ended as a reuse")
			}
			if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2
				AND request_id = $3 AND data->>'client_ip' = '198.51.100.23' AND data->>'user_id' = $4`,
				audit.ActionRefreshTokenReused, sid, rid, ownerID.UserID); n != 1 {
				t.Errorf("reuse audit rows naming the request and its client IP: %d, want 1", n)
			}
			if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2`, serviceaccounts.ActionTokenRevoked, sid); n != 0 {
				t.Errorf("the reuse was audited as a revocation too (%d rows)", n)
			}
			if r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": next.RefreshToken}); r.Status != http.StatusBadRequest {
				t.Errorf("the successor still refreshes: %d", r.Status)
			}
		})
	}

	// The live token, and one rotated within the grace window, sign out
	// as before.
	refresh(owner.RefreshToken)
	revoke(owner.RefreshToken, "revoke-in-grace", nil)
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = $2`, ownerID.SessionID, sessions.ReasonLogout); n != 1 {
		t.Errorf("a token rotated within the grace window did not sign out")
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1`, audit.ActionRefreshTokenReused); n != 2 {
		t.Errorf("reuse audit rows: %d, want 2", n)
	}
}
