package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// exchangeNaming exchanges a hand-over code naming tenantID as its
// tenant_id.
func (x *env) exchangeNaming(t *testing.T, code, tenantID string) apitest.Response {
	t.Helper()
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "oauth_handover", "code": code, "tenant_id": tenantID})
}

// TestHandoverNamingAnotherTenantRefused: the tenant of a provider sign-in
// is chosen when it starts (authorize's tenant_id, else the oldest active
// membership), and the callback opens the session there; the exchange
// chooses nothing. An exchange that names another tenant (tenant_id, as
// the password grant takes it), one the user is a member of or not, is
// refused, 400 invalid_request naming tenant_id, before the code is
// spent: it was answered with tokens of the sign-in's tenant, so a
// client that asked for tenant B acted in tenant A without a word. The
// code is then exchanged naming its own tenant, in either letter case;
// presented again naming another, it is a reuse and ends the session.
func TestHandoverNamingAnotherTenantRefused(t *testing.T) {
	x := start(t)
	home := x.finish(t, x.begin(t, ""))
	uid := sub(t, home.AccessToken)
	team := x.SeedTenant(t, "Team")
	x.SeedMember(t, team.ID, uid, "member")
	stranger := x.SeedTenant(t, "Stranger")
	st := x.begin(t, "?tenant_id="+team.ID)
	code := handover(t, x.callback(t, x.approve(t, st), st.cookie))
	const qKept = `SELECT count(*) FROM oauth_handovers WHERE code_hash = sha256(convert_to($1, 'UTF8')) AND expires_at > now()`

	for _, tid := range []string{home.TenantID, stranger.ID} {
		r := x.exchangeNaming(t, code, tid)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidRequest {
			t.Fatalf("exchange naming tenant %s: %d %s, want 400 %s", tid, r.Status, r.Body, problem.CodeInvalidRequest)
		}
		if !strings.Contains(string(r.Body), "tenant_id") {
			t.Errorf("exchange naming tenant %s: %s, want the field tenant_id named", tid, r.Body)
		}
	}
	r := x.exchangeNaming(t, code, "nope")
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidRequest {
		t.Fatalf("malformed tenant_id: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidRequest)
	}
	if r.Stats.Queries != 0 {
		t.Errorf("a malformed tenant_id ran %d queries, want none", r.Stats.Queries)
	}
	if n := x.count(t, qKept, code); n != 1 {
		t.Fatal("a refused exchange spent the hand-over code")
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handover_uses WHERE code_hash = sha256(convert_to($1, 'UTF8'))`, code); n != 0 {
		t.Fatalf("a refused exchange was remembered as an exchange (%d)", n)
	}

	r = x.exchangeNaming(t, code, strings.ToUpper(team.ID))
	if r.Status != http.StatusOK {
		t.Fatalf("exchange naming its own tenant: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	if tk.TenantID != team.ID {
		t.Errorf("exchange: tenant_id %s, want %s", tk.TenantID, team.ID)
	}
	if r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken}); r.Status != http.StatusOK {
		t.Fatalf("refresh after the exchange: %d %s", r.Status, r.Body)
	}

	// An exchanged code presented again is a reuse, whatever tenant it
	// names: refused as an unknown code, and its session ends.
	r = x.exchangeNaming(t, code, stranger.ID)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidGrant {
		t.Fatalf("exchanged code again, naming another tenant: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidGrant)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND revoked_reason = 'handover_code_reuse'`, team.ID, uid); n != 1 {
		t.Errorf("sessions ended for the code's reuse: %d, want 1", n)
	}
}
