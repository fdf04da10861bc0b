package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type enrolment struct {
	Secret     string `json:"secret"`
	OTPAuthURI string `json:"otpauth_uri"`
}

func (e *env) enrol(t testing.TB, as *identity.Identity) enrolment {
	t.Helper()
	r := e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp", nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("enrol: %d %s", r.Status, r.Body)
	}
	var en enrolment
	r.JSON(t, &en)
	return en
}

// codeAt is what an authenticator app shows for secret at t.
func codeAt(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	c, err := mfa.Code(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) confirm(t testing.TB, as *identity.Identity, code string) apitest.Response {
	t.Helper()
	return e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": code})
}

// mfaUser signs up, enrols and confirms; it returns the signup tokens, the
// secret and the recovery codes. The confirmation used the current step.
func (e *env) mfaUser(t testing.TB, email string) (tokens, string, []string) {
	t.Helper()
	tk, secret, codes, _ := e.mfaUserSpent(t, email)
	return tk, secret, codes
}

// mfaUserSpent is mfaUser, also returning the code the enrolment was
// confirmed with: spent from then on.
func (e *env) mfaUserSpent(t testing.TB, email string) (tokens, string, []string, string) {
	t.Helper()
	tk := e.signup(t, email, "T "+email)
	as := e.identityFor(t, tk)
	en := e.enrol(t, as)
	spent := codeAt(t, en.Secret, time.Now())
	r := e.confirm(t, as, spent)
	if r.Status != http.StatusOK {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.JSON(t, &rc)
	return tk, en.Secret, rc.RecoveryCodes, spent
}

type mfaRequired struct {
	Code      string `json:"code"`
	Detail    string `json:"detail"`
	Error     string `json:"error"`
	ErrorDesc string `json:"error_description"`
	MFAToken  string `json:"mfa_token"`
	ExpiresIn int64  `json:"expires_in"`
	Status    int    `json:"status"`
}

// challenge signs in with the password and expects mfa_required.
func (e *env) challenge(t testing.TB, email string) string {
	t.Helper()
	r := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("password grant of an MFA user: %d %s, want 401", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("content type %q", ct)
	}
	// The headers of every problem answer (handleError's), though the
	// token endpoint writes this one itself.
	apitest.WantProblemHeaders(t, "mfa_required", r)
	// A 401 carries a challenge (RFC 9110): RFC 9470's, asking for a
	// second factor.
	if wa := r.Header.Get("WWW-Authenticate"); wa != `Bearer error="insufficient_user_authentication", acr_values="mfa"` {
		t.Errorf("WWW-Authenticate %q", wa)
	}
	var m mfaRequired
	r.JSON(t, &m)
	if m.Code != "mfa_required" || m.Error != "mfa_required" || m.MFAToken == "" || m.ExpiresIn != 300 || m.Status != 401 {
		t.Fatalf("mfa_required body = %+v", m)
	}
	// An OAuth error like every other answer of the token endpoint (RFC
	// 6749 section 5.2): error and error_description beside problem+json.
	if m.ErrorDesc == "" || m.ErrorDesc != m.Detail {
		t.Fatalf("mfa_required error_description %q, want the detail %q", m.ErrorDesc, m.Detail)
	}
	return m.MFAToken
}

func (e *env) mfaOTP(t testing.TB, mfaToken, code string) apitest.Response {
	t.Helper()
	return e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": mfaToken, "code": code})
}

func wantStatus(t testing.TB, what string, r apitest.Response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: %d %s, want %d", what, r.Status, r.Body, status)
	}
	if code != "" {
		if p := r.Problem(t); p.Code != code {
			t.Fatalf("%s: code %q, want %q", what, p.Code, code)
		}
	}
}

func amrOf(t testing.TB, tok string) (amr []string, acr string, authTime int64) {
	t.Helper()
	c := claims(t, tok)
	for _, v := range c["amr"].([]any) {
		amr = append(amr, v.(string))
	}
	return amr, c["acr"].(string), int64(c["auth_time"].(float64))
}

func TestTOTPEnrolment(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "enrol@example.com", "E")
	as := e.identityFor(t, tk)

	mfaFlags := func() (me, projected bool) {
		t.Helper()
		r := e.Get(t, as, "/api/v1/users/me")
		var m struct {
			MFAEnabled *bool `json:"mfa_enabled"`
		}
		r.JSON(t, &m)
		pr := e.Do(t, apitest.Request{Method: http.MethodGet, Service: true,
			Path: identity.ProjectionPath + "/" + as.UserID + "?tenant_id=" + as.TenantID})
		var p identity.Projection
		pr.JSON(t, &p)
		if m.MFAEnabled == nil {
			t.Fatalf("GET /users/me has no mfa_enabled: %s", r.Body)
		}
		return *m.MFAEnabled, p.MFAEnabled
	}
	if me, pj := mfaFlags(); me || pj {
		t.Errorf("before enrolment: mfa_enabled me=%v projection=%v", me, pj)
	}
	// Nothing to confirm yet.
	wantStatus(t, "confirm before enrolment", e.confirm(t, as, "123456"), http.StatusNotFound, "not_found")

	first := e.enrol(t, as)
	if !strings.HasPrefix(first.OTPAuthURI, "otpauth://totp/Tollgate:enrol@example.com?") || !strings.Contains(first.OTPAuthURI, "secret="+first.Secret) {
		t.Errorf("otpauth_uri = %s", first.OTPAuthURI)
	}
	// Enrolling again before confirming replaces the pending secret.
	second := e.enrol(t, as)
	if second.Secret == first.Secret {
		t.Fatal("second enrolment returned the same secret")
	}
	var sealed []byte
	if err := e.DB.Pool.QueryRow(context.Background(), `SELECT secret_sealed FROM mfa_totp`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(second.Secret)) {
		t.Fatal("the TOTP secret is stored in plain text")
	}
	now := time.Now()
	wantStatus(t, "code of the replaced secret", e.confirm(t, as, codeAt(t, first.Secret, now)), http.StatusBadRequest, "invalid_mfa_code")
	for _, bad := range []string{"", strings.Repeat("1", 65)} {
		wantStatus(t, "confirm "+strconv.Quote(bad), e.confirm(t, as, bad), http.StatusUnprocessableEntity, "validation_failed")
	}
	// Two steps (60 s) from the current one, reckoned just before sending.
	wantStatus(t, "code two steps ahead", e.confirm(t, as, codeAt(t, second.Secret, time.Now().Add(60*time.Second))), http.StatusBadRequest, "invalid_mfa_code")
	wantStatus(t, "letters", e.confirm(t, as, "abcdef"), http.StatusBadRequest, "invalid_mfa_code")

	r := e.confirm(t, as, codeAt(t, second.Secret, now))
	wantStatus(t, "confirm", r, http.StatusOK, "")
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.JSON(t, &rc)
	if len(rc.RecoveryCodes) != 10 {
		t.Fatalf("%d recovery codes, want 10", len(rc.RecoveryCodes))
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE used_at IS NULL`); n != 10 {
		t.Errorf("%d stored recovery codes, want 10", n)
	}
	for _, c := range rc.RecoveryCodes {
		if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE position($1::bytea IN code_hash) > 0`, []byte(c)); n != 0 {
			t.Fatalf("recovery code %s stored in plain text", c)
		}
	}
	if me, pj := mfaFlags(); !me || !pj {
		t.Errorf("after enrolment: mfa_enabled me=%v projection=%v", me, pj)
	}
	wantStatus(t, "enrol while active", e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp", nil), http.StatusConflict, "conflict")
	wantStatus(t, "confirm while active", e.confirm(t, as, codeAt(t, second.Secret, now)), http.StatusConflict, "conflict")
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_enabled'`); n != 1 {
		t.Errorf("%d user.mfa_enabled audit events, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_code_failed'`); n != 3 {
		t.Errorf("%d user.mfa_code_failed audit events, want 3 (the wrong codes)", n)
	}
	// Without an identity there is no enrolment.
	wantStatus(t, "anonymous enrol", e.Send(t, nil, http.MethodPost, "/api/v1/users/me/mfa/totp", nil), http.StatusUnauthorized, "unauthenticated")
}

func TestMFASignIn(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	_, secret, codes, spent := e.mfaUserSpent(t, "m@example.com")

	mt := e.challenge(t, "m@example.com")
	// The code confirmed at enrolment is spent, even while it is still
	// inside the window (the same step, or the one before the current).
	wantStatus(t, "code replayed from enrolment", e.mfaOTP(t, mt, spent), http.StatusBadRequest, "invalid_grant")
	// The next step's code (clock skew of one step) is accepted.
	before := time.Now().Unix()
	r := e.mfaOTP(t, mt, codeAt(t, secret, time.Now().Add(30*time.Second)))
	wantStatus(t, "code of the next step", r, http.StatusOK, "")
	var tk tokens
	r.JSON(t, &tk)
	e.verify(t, tk.AccessToken)
	amr, acr, at := amrOf(t, tk.AccessToken)
	if !slices.Equal(amr, []string{"pwd", "otp"}) || acr != "mfa" || at < before || at > time.Now().Unix() {
		t.Errorf("amr %v acr %s auth_time %d", amr, acr, at)
	}
	// The mfa_token is single use.
	wantStatus(t, "mfa_token used twice", e.mfaOTP(t, mt, codes[0]), http.StatusBadRequest, "invalid_grant")

	// A refresh keeps the authentication as it was.
	time.Sleep(1100 * time.Millisecond) // auth_time has second resolution
	rr := e.refresh(t, tk.RefreshToken)
	wantStatus(t, "refresh", rr, http.StatusOK, "")
	var tk2 tokens
	rr.JSON(t, &tk2)
	amr2, acr2, at2 := amrOf(t, tk2.AccessToken)
	if !slices.Equal(amr2, amr) || acr2 != acr || at2 != at {
		t.Errorf("refresh changed the authentication: %v %s %d, was %v %s %d", amr2, acr2, at2, amr, acr, at)
	}

	// A recovery code works once.
	r = e.mfaOTP(t, e.challenge(t, "m@example.com"), strings.ToUpper(codes[1]))
	wantStatus(t, "recovery code", r, http.StatusOK, "")
	wantStatus(t, "recovery code twice", e.mfaOTP(t, e.challenge(t, "m@example.com"), codes[1]), http.StatusBadRequest, "invalid_grant")
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_recovery_code_used' AND data->>'remaining' = '9'`); n != 1 {
		t.Errorf("%d recovery-code audit events with 9 remaining, want 1", n)
	}

	// A password sign-in alone never yields tokens.
	wantStatus(t, "no code", e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": mt}), http.StatusBadRequest, "invalid_request")
	wantStatus(t, "no token, no bearer", e.token(t, map[string]string{"grant_type": "mfa_otp", "code": "123456"}), http.StatusBadRequest, "invalid_request")
	wantStatus(t, "unknown token", e.mfaOTP(t, "mfa_nothing", "123456"), http.StatusBadRequest, "invalid_grant")
	wantStatus(t, "long code", e.mfaOTP(t, e.challenge(t, "m@example.com"), strings.Repeat("1", 65)), http.StatusBadRequest, "invalid_grant")

	// Form-encoded works the same.
	fr := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ContentType: "application/x-www-form-urlencoded",
		Body: "grant_type=mfa_otp&mfa_token=" + e.challenge(t, "m@example.com") + "&code=" + codes[2]})
	wantStatus(t, "form-encoded", fr, http.StatusOK, "")
}

// TestSecondFactorNamingAnotherTenantRefused: a sign-in's second step
// lands in the tenant its password step chose, and a step-up keeps its
// session's: either one naming another tenant (tenant_id) is refused, 400
// invalid_request naming the field, before the code is looked at, so the
// code, the mfa_token's try and the account's count of guesses stay. It
// was answered with tokens of the other tenant, tenant_id ignored. Naming
// the tenant it lands in is a second step like any other.
func TestSecondFactorNamingAnotherTenantRefused(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "tenants@example.com")
	as := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, as.UserID, "member")
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	tries := func() int {
		return e.count(t, `SELECT coalesce(sum(failures), 0)::int FROM login_attempts`)
	}
	before := tries()

	mt := e.challenge(t, "tenants@example.com")
	r := e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": code, "tenant_id": second.ID})
	wantStatus(t, "second step naming another tenant", r, http.StatusBadRequest, problem.CodeInvalidRequest)
	if !strings.Contains(string(r.Body), "tenant_id") {
		t.Errorf("second step naming another tenant: %s, want tenant_id named", r.Body)
	}
	r = e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code, "tenant_id": second.ID})
	wantStatus(t, "step-up naming another tenant", r, http.StatusBadRequest, problem.CodeInvalidRequest)
	wantStatus(t, "malformed tenant_id", e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": code, "tenant_id": "nope"}),
		http.StatusBadRequest, problem.CodeInvalidRequest)
	if n := e.count(t, `SELECT attempts FROM mfa_challenges WHERE token_hash = $1`, mfa.HashToken(mt)); n != 0 {
		t.Errorf("the refused second steps spent %d of the mfa_token's tries, want none", n)
	}
	if got := tries(); got != before {
		t.Errorf("the account's count of guesses moved from %d to %d", before, got)
	}
	// The code and the mfa_token still open the sign-in, in the tenant
	// the password step chose, named in either letter case.
	r = e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": code, "tenant_id": strings.ToUpper(tk.TenantID)})
	wantStatus(t, "second step naming its tenant", r, http.StatusOK, "")
	var got tokens
	r.JSON(t, &got)
	if got.TenantID != tk.TenantID || claims(t, got.AccessToken)["tid"] != tk.TenantID {
		t.Errorf("signed in to %s, want %s", got.TenantID, tk.TenantID)
	}
}

// TestRefusedSecondStepTakesNoTry: a second step refused before its code
// is looked at, for naming another tenant than its challenge's or for an
// account disabled since the password step, never holds one of the
// mfa_token's tries, not even for a moment. It claimed a try, then gave
// it back: with the challenge one try short of auth.ChallengeAttempts, a
// second step sent meanwhile found no try left (400 invalid_grant, "out
// of attempts"), the owner's right code included. The claim and the
// giving back take the same row, so no row lock parks a request between
// them: a statement trigger parks any statement that gives a try back,
// before it locks anything, on an advisory lock the test holds.
func TestRefusedSecondStepTakesNoTry(t *testing.T) {
	t.Parallel()
	// The statement that gives a try back is matched by its own text
	// (auth.QGiveBackTry), whatever it says.
	qPark := `
CREATE FUNCTION park_given_back_try() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF strpos(current_query(), '` + strings.ReplaceAll(auth.QGiveBackTry, "'", "''") + `') > 0 THEN
        PERFORM pg_advisory_xact_lock(7201);
    END IF;
    RETURN NULL;
END $$`
	const (
		qTrigger = `CREATE TRIGGER park_given_back_try BEFORE UPDATE ON mfa_challenges
FOR EACH STATEMENT EXECUTE FUNCTION park_given_back_try()`
		qDisable = `UPDATE users SET status = 'disabled' WHERE id = $1`
		qEnable  = `UPDATE users SET status = 'active' WHERE id = $1`
	)
	for _, tt := range []struct {
		name string
		// off and on: what the account goes through ("": nothing).
		off, on       string
		otherTenant   bool   // the refused step names another tenant
		meanwhile     int    // the answer to the owner's code sent meanwhile
		meanwhileErr  string // and its code
		refusedStatus int    // the refused step's answer
		refused       string // and its code
	}{
		{"naming another tenant", "", "", true, http.StatusOK, "", http.StatusBadRequest, problem.CodeInvalidRequest},
		{"account disabled", qDisable, qEnable, false, http.StatusForbidden, problem.CodeUserDisabled, http.StatusForbidden, problem.CodeUserDisabled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			const email = "refused-step-race@example.com"
			tk, secret, _ := e.mfaUser(t, email)
			as := e.identityFor(t, tk)
			second := e.SeedTenant(t, "Second")
			e.SeedMember(t, second.ID, as.UserID, "member")
			mt := e.challenge(t, email)
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
					t.Fatal(err)
				}
			}
			exec(`UPDATE mfa_challenges SET attempts = $2 WHERE token_hash = $1`, mfa.HashToken(mt), auth.ChallengeAttempts-1)
			exec(qPark)
			exec(qTrigger)
			if tt.off != "" {
				exec(tt.off, as.UserID)
			}
			hold := e.DB.Hold(t, `SELECT pg_advisory_xact_lock(7201)`)
			body := map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": "000000"}
			if tt.otherTenant {
				body["tenant_id"] = second.ID
			}
			refused := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { return e.token(t, body) })
			if n := e.count(t, `SELECT attempts FROM mfa_challenges WHERE token_hash = $1`, mfa.HashToken(mt)); n != auth.ChallengeAttempts-1 {
				t.Errorf("tries counted while a refused second step is answered: %d, want %d", n, auth.ChallengeAttempts-1)
			}
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			wantStatus(t, "the owner's code meanwhile", e.mfaOTP(t, mt, code), tt.meanwhile, tt.meanwhileErr)
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, "refused second step", refused(), tt.refusedStatus, tt.refused)
			if tt.on != "" {
				exec(tt.on, as.UserID)
				wantStatus(t, "the owner's code once active", e.mfaOTP(t, mt, code), http.StatusOK, "")
			}
		})
	}
}

// TestMFAStepAfterTheTenantIsLeft: a sign-in waiting for its second factor
// is answered, once the code is given, as its password sign-in would be
// then. One naming no tenant was bound to the tenant its password step
// picked: removed from it (or disabled there) before the code, the user
// got 403 user_disabled though they belonged to other tenants, and with
// none left, where the password grant answers 403 no_membership. It now
// lands in the user's next active tenant, as the password grant does; one
// naming its tenant is 403 forbidden, as the password grant answers, and
// a disabled account 403 user_disabled.
func TestMFAStepAfterTheTenantIsLeft(t *testing.T) {
	t.Parallel()
	const (
		qRemove  = `DELETE FROM memberships WHERE tenant_id = $2 AND user_id = $1`
		qDisable = `UPDATE memberships SET status = 'disabled' WHERE tenant_id = $2 AND user_id = $1`
		qAccount = `UPDATE users SET status = 'disabled' WHERE id = $1 AND $2::uuid IS NOT NULL`
	)
	for _, tt := range []struct {
		name           string
		leave          string
		another, named bool
		namedAtCode    bool // named by the second step alone
		status         int
		code           string
	}{
		{"removed, another tenant", qRemove, true, false, false, http.StatusOK, ""},
		{"disabled, another tenant", qDisable, true, false, false, http.StatusOK, ""},
		{"removed, no other tenant", qRemove, false, false, false, http.StatusForbidden, problem.CodeNoMembership},
		{"removed from the tenant named", qRemove, true, true, false, http.StatusForbidden, problem.CodeForbidden},
		{"removed from the tenant the second step names", qRemove, true, false, true, http.StatusForbidden, problem.CodeForbidden},
		{"account disabled", qAccount, true, false, false, http.StatusForbidden, problem.CodeUserDisabled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk, secret, _ := e.mfaUser(t, "leaving@example.com")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			second := e.SeedTenant(t, "Second")
			if tt.another {
				e.SeedMember(t, second.ID, uid, "member")
			}
			body := map[string]string{"grant_type": "password", "email": "leaving@example.com", "password": pw}
			if tt.named {
				body["tenant_id"] = tk.TenantID
			}
			r := e.token(t, body)
			wantStatus(t, "password step", r, http.StatusUnauthorized, problem.CodeMFARequired)
			var m mfaRequired
			r.JSON(t, &m)

			if _, err := e.DB.Pool.Exec(ctx, tt.leave, uid, tk.TenantID); err != nil {
				t.Fatal(err)
			}
			if err := sessions.RevokeInTenant(ctx, e.DB.Pool, uid, tk.TenantID); err != nil {
				t.Fatal(err)
			}
			// What the password grant answers now, the second factor aside.
			if !tt.named && !tt.namedAtCode && tt.status != http.StatusOK {
				wantStatus(t, "password sign-in now", e.token(t, body), tt.status, tt.code)
			}
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			if tt.namedAtCode {
				// Named at this step only: the tenant it names was left, and
				// the sign-in is refused rather than moved to the next one.
				r = e.token(t, map[string]string{"grant_type": "mfa_otp", "mfa_token": m.MFAToken, "code": code, "tenant_id": tk.TenantID})
			} else {
				r = e.mfaOTP(t, m.MFAToken, code)
			}
			wantStatus(t, "code", r, tt.status, tt.code)
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL`, uid, tk.TenantID); n != 0 {
				t.Errorf("live sessions in the tenant left = %d, want 0", n)
			}
			if tt.status != http.StatusOK {
				return
			}
			var got tokens
			r.JSON(t, &got)
			if got.TenantID != second.ID || claims(t, got.AccessToken)["tid"] != second.ID {
				t.Errorf("signed in to %s, want the other tenant %s", got.TenantID, second.ID)
			}
			if amr, acr, _ := amrOf(t, got.AccessToken); !slices.Equal(amr, []string{"pwd", "otp"}) || acr != "mfa" {
				t.Errorf("amr %v acr %s, want [pwd otp] mfa", amr, acr)
			}
		})
	}
}

func TestMFAChallengeLimits(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	_, secret, _ := e.mfaUser(t, "lim@example.com")

	t.Run("five attempts", func(t *testing.T) {
		mt := e.challenge(t, "lim@example.com")
		for i := range auth.ChallengeAttempts {
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
				Body:   map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": "000000"},
				Header: http.Header{"X-Forwarded-For": {"198.51.100." + strconv.Itoa(10+i)}}})
			wantStatus(t, "wrong code "+strconv.Itoa(i+1), r, http.StatusBadRequest, "invalid_grant")
		}
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
			Body:   map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": codeAt(t, secret, time.Now().Add(30*time.Second))},
			Header: http.Header{"X-Forwarded-For": {"198.51.100.99"}}})
		wantStatus(t, "right code after five wrong ones", r, http.StatusBadRequest, "invalid_grant")
	})
	t.Run("expired", func(t *testing.T) {
		mt := e.challenge(t, "lim@example.com")
		if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE mfa_challenges SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, mfa.HashToken(mt)); err != nil {
			t.Fatal(err)
		}
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
			Body:   map[string]string{"grant_type": "mfa_otp", "mfa_token": mt, "code": codeAt(t, secret, time.Now().Add(30*time.Second))},
			Header: http.Header{"X-Forwarded-For": {"198.51.100.98"}}})
		wantStatus(t, "expired mfa_token", r, http.StatusBadRequest, "invalid_grant")
	})
	t.Run("stored hashed", func(t *testing.T) {
		mt := e.challenge(t, "lim@example.com")
		if n := e.count(t, `SELECT count(*) FROM mfa_challenges WHERE token_hash = $1`, mfa.HashToken(mt)); n != 1 {
			t.Errorf("challenge not stored under its hash")
		}
		if n := e.count(t, `SELECT count(*) FROM mfa_challenges WHERE position($1::bytea IN token_hash) > 0`, []byte(mt)); n != 0 {
			t.Errorf("mfa_token stored in plain text")
		}
	})
}

// TestMFABruteForceParallel: wrong codes sent at once for one user from one
// client are held by the password lockout: exactly Threshold are evaluated.
func TestMFABruteForceParallel(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, _, _ := e.mfaUser(t, "bf@example.com")
	as := e.identityFor(t, tk)
	const n = 30
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	gun := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gun
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", As: as,
				Body:   map[string]string{"grant_type": "mfa_otp", "code": "999999"},
				Header: http.Header{"X-Forwarded-For": {"203.0.113.7"}}})
			mu.Lock()
			statuses[r.Status]++
			mu.Unlock()
		}()
	}
	close(gun)
	wg.Wait()
	limit := auth.DefaultLockout().Threshold
	if statuses[http.StatusBadRequest] != limit || statuses[http.StatusTooManyRequests] != n-limit {
		t.Fatalf("statuses %v; want %d evaluated (400) and %d refused (429)", statuses, limit, n-limit)
	}
}

func TestStepUpAndDisable(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, codes := e.mfaUser(t, "s@example.com")
	ctx := context.Background()
	as := e.identityFor(t, tk)
	del := func() apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil)
	}
	// The second factor given at enrolment is too old ten minutes later.
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE sessions SET auth_time = now() - interval '10 minutes'`); err != nil {
		t.Fatal(err)
	}
	r := del()
	wantStatus(t, "disable with an old factor", r, http.StatusUnauthorized, "insufficient_user_authentication")
	if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300` {
		t.Errorf("WWW-Authenticate = %q", got)
	}

	// Another session of the same user, signed in with both factors.
	r = e.mfaOTP(t, e.challenge(t, "s@example.com"), codes[0])
	wantStatus(t, "second session", r, http.StatusOK, "")
	var other tokens
	r.JSON(t, &other)
	otherAs := e.identityFor(t, other)

	// Step up the first session with a code: a new access token for the
	// same session, with the second factor and a fresh auth_time.
	r = e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	amr, acr, at := amrOf(t, up.AccessToken)
	if !slices.Equal(amr, []string{"pwd", "otp"}) || acr != "mfa" || time.Now().Unix()-at > 5 {
		t.Errorf("stepped-up token: amr %v acr %s auth_time %d", amr, acr, at)
	}
	if got, want := claims(t, up.AccessToken)["sid"], as.SessionID; got != want {
		t.Errorf("step-up sid = %v, want the same session %s", got, want)
	}
	// The other session is not stepped up by it.
	var otherAT int64
	if err := e.DB.Pool.QueryRow(ctx, `SELECT floor(extract(epoch FROM auth_time))::bigint FROM sessions WHERE id = $1`, otherAs.SessionID).Scan(&otherAT); err != nil {
		t.Fatal(err)
	}
	_, _, otherClaimAT := amrOf(t, other.AccessToken)
	if otherAT != otherClaimAT {
		t.Errorf("the other session's auth_time moved: %d, was %d", otherAT, otherClaimAT)
	}

	// Disable from the stepped-up session.
	wantStatus(t, "disable after step-up", del(), http.StatusNoContent, "")
	wantStatus(t, "disable again", del(), http.StatusNotFound, "not_found")
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes`); n != 0 {
		t.Errorf("%d recovery codes left after disabling", n)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_disabled'`); n != 1 {
		t.Errorf("%d user.mfa_disabled audit events, want 1", n)
	}
	// A plain password sign-in is enough again; its token says so.
	amr, acr, _ = amrOf(t, e.login(t, "s@example.com").AccessToken)
	if !slices.Equal(amr, []string{"pwd"}) || acr != "pwd" {
		t.Errorf("password-only token: amr %v acr %s", amr, acr)
	}
	// Without a second factor there is nothing to step up with.
	r = e.Send(t, otherAs, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": "123456"})
	wantStatus(t, "step up without MFA", r, http.StatusBadRequest, "invalid_grant")
}

// TestRegenerateRecoveryCodes: new recovery codes need a second factor
// given in the last five minutes (as disabling it does); they replace the
// old ones, which stop working at once; the new ones sign in; without a
// factor there are none to make.
func TestRegenerateRecoveryCodes(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	tk, secret, old := e.mfaUser(t, "rc@example.com")
	as := e.identityFor(t, tk)
	regen := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil)
	}
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE sessions SET auth_time = now() - interval '10 minutes'`); err != nil {
		t.Fatal(err)
	}
	r := regen(as)
	wantStatus(t, "new codes with an old factor", r, http.StatusUnauthorized, "insufficient_user_authentication")
	if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	r = e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up", r, http.StatusOK, "")

	r = regen(as)
	wantStatus(t, "new codes", r, http.StatusOK, "")
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.JSON(t, &rc)
	if len(rc.RecoveryCodes) != len(old) {
		t.Fatalf("%d new codes, want %d", len(rc.RecoveryCodes), len(old))
	}
	for _, c := range rc.RecoveryCodes {
		if slices.Contains(old, c) {
			t.Errorf("new code %q was an old one", c)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, as.UserID); n != len(old) {
		t.Errorf("%d stored codes, want %d", n, len(old))
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_recovery_codes_regenerated'`); n != 1 {
		t.Errorf("%d user.mfa_recovery_codes_regenerated events, want 1", n)
	}
	// An old code no longer signs in; a new one does.
	wantStatus(t, "old code", e.mfaOTP(t, e.challenge(t, "rc@example.com"), old[1]), http.StatusBadRequest, "")
	wantStatus(t, "new code", e.mfaOTP(t, e.challenge(t, "rc@example.com"), rc.RecoveryCodes[0]), http.StatusOK, "")

	// Without an active factor: nothing to make codes for.
	plain := e.identityFor(t, e.signup(t, "plain@example.com", "Plain"))
	wantStatus(t, "no factor", regen(plain), http.StatusNotFound, "not_found")
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, plain.UserID); n != 0 {
		t.Errorf("%d codes for an account without a factor", n)
	}
}

func TestStepUpRevokedSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "rv@example.com")
	as := e.identityFor(t, tk)
	wantStatus(t, "logout", e.Send(t, as, http.MethodPost, "/api/v1/auth/logout", nil), http.StatusNoContent, "")
	r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up of a revoked session", r, http.StatusUnauthorized, "invalid_token")
	if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer error="invalid_token"`) {
		t.Errorf("step up of a revoked session: WWW-Authenticate %q", got)
	}
	// A forged identity on the token endpoint is refused, not ignored.
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", As: as,
		SignPath: "/api/v1/other", Body: map[string]string{"grant_type": "mfa_otp", "code": "123456"}})
	wantStatus(t, "forged identity", r, http.StatusUnauthorized, "unauthenticated")
}

// TestStepUpOfAnInactiveAccount: a step-up mints a fresh auth_time (and a
// refresh token) for its session, so an account that may not use its
// session now cannot step up either, 403 user_disabled (for the account,
// its sign-in's answer): a disabled account, a member disabled in the
// session's tenant, a suspended tenant. A proxy that has not yet heard of the
// change still forwards the bearer. The refused code is not spent, the
// session's auth_time does not move, and once active again the same code
// steps up.
func TestStepUpOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	tk, secret, _ := e.mfaUser(t, "inactive@example.com")
	as := e.identityFor(t, tk)
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	stepUp := func() apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	authTime := func() int64 {
		t.Helper()
		var at int64
		if err := e.DB.Pool.QueryRow(ctx, `SELECT floor(extract(epoch FROM auth_time))::bigint FROM sessions WHERE id = $1`, as.SessionID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	exec(`UPDATE sessions SET auth_time = now() - interval '10 minutes' WHERE id = $1`, as.SessionID)
	before := authTime()
	for _, tc := range inactiveStates() {
		exec(tc.off, as.UserID)
		if tc.name == "disabled account" {
			// What the sign-in of the same account answers.
			wantStatus(t, "sign-in of a disabled account", e.token(t, map[string]string{"grant_type": "password", "email": "inactive@example.com", "password": pw}),
				http.StatusForbidden, "user_disabled")
		}
		wantStatus(t, "step-up of a "+tc.name, stepUp(), http.StatusForbidden, "user_disabled")
		if got := authTime(); got != before {
			t.Errorf("%s: the refused step-up moved auth_time to %d, was %d", tc.name, got, before)
		}
		exec(tc.on, as.UserID)
	}
	// Nothing was spent: the same code steps up the active account.
	wantStatus(t, "step-up once active", stepUp(), http.StatusOK, "")
}

// TestConfirmOfAnEndedSession: an enrolment started by a session that has
// since ended (the owner signed out everywhere, or reset the password,
// after someone else started it with a stolen sign-in) cannot be
// confirmed with that session's access token, which a proxy that has not
// yet heard of the end still forwards: the factor would lock the owner
// out of the account they just took back. Nothing is activated and the
// code is not spent.
func TestConfirmOfAnEndedSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "ended@example.com", "E")
	as := e.identityFor(t, tk)
	en := e.enrol(t, as)
	other := e.identityFor(t, e.login(t, "ended@example.com"))
	wantStatus(t, "logout everywhere", e.Send(t, other, http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "global"}), http.StatusNoContent, "")
	code := codeAt(t, en.Secret, time.Now())
	r := e.confirm(t, as, code)
	wantStatus(t, "confirm with an ended session", r, http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'pending' AND last_step IS NULL`, as.UserID); n != 1 {
		t.Error("the enrolment is not pending with its code unspent")
	}
	// The owner, signed in again, confirms their own enrolment.
	mine := e.identityFor(t, e.login(t, "ended@example.com"))
	en = e.enrol(t, mine)
	wantStatus(t, "confirm with a live session", e.confirm(t, mine, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
}

// TestConfirmOfAnInactiveAccount: an enrolment cannot be confirmed by an
// account that is disabled, disabled in the session's tenant, or of a
// suspended tenant (403 user_disabled, as its step-up and its password
// change are refused), whose bearer a proxy that has not yet heard of the
// change still forwards: whoever held it (the reason an admin disables an
// account) would choose the second factor the account comes back with,
// and end its owner's other sessions. Nothing is activated, no other
// session ends and the code is not spent.
func TestConfirmOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	const email = "inactive-confirm@example.com"
	as := e.identityFor(t, e.signup(t, email, "I"))
	other := e.login(t, email)
	en := e.enrol(t, as)
	code := codeAt(t, en.Secret, time.Now())
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range inactiveStates() {
		exec(tc.off, as.UserID)
		wantStatus(t, "confirm of a "+tc.name, e.confirm(t, as, code), http.StatusForbidden, "user_disabled")
		if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'pending' AND last_step IS NULL`, as.UserID); n != 1 {
			t.Fatalf("%s: the enrolment is not pending with its code unspent", tc.name)
		}
		if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL`, as.UserID); n != 0 {
			t.Fatalf("%s: %d sessions ended by a refused confirmation", tc.name, n)
		}
		exec(tc.on, as.UserID)
	}
	// Nothing was spent: the same code confirms for the active account,
	// which ends the other session.
	wantStatus(t, "confirm once active", e.confirm(t, as, code), http.StatusOK, "")
	wantStatus(t, "refresh of the other session", e.refresh(t, other.RefreshToken), http.StatusBadRequest, "invalid_grant")
}

// TestEnrolmentOfAnInactiveAccount: an enrolment is not started by an
// account that is disabled, disabled in the session's tenant, or of a
// suspended tenant (403 user_disabled, as its confirmation, its step-up
// and its password change are refused), whose bearer a proxy that has
// not yet heard of the change still forwards: whoever held it would
// replace the owner's pending enrolment with a secret of its own, ready
// to confirm the moment the account is active again. The pending secret
// is kept, and once active an enrolment starts again.
func TestEnrolmentOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	const email = "inactive-enrol@example.com"
	as := e.identityFor(t, e.signup(t, email, "I"))
	en := e.enrol(t, as)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	var sealed []byte
	if err := e.DB.Pool.QueryRow(ctx, `SELECT secret_sealed FROM mfa_totp WHERE user_id = $1`, as.UserID).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	for _, tc := range inactiveStates() {
		exec(tc.off, as.UserID)
		wantStatus(t, "enrolment of a "+tc.name, e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp", nil),
			http.StatusForbidden, "user_disabled")
		if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'pending' AND secret_sealed = $2`, as.UserID, sealed); n != 1 {
			t.Fatalf("%s: the pending enrolment was replaced", tc.name)
		}
		exec(tc.on, as.UserID)
	}
	// Nothing was replaced: the first secret's code confirms.
	wantStatus(t, "confirm once active", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
}

// TestFactorChangesOfAnInactiveAccount: the second factor of an account
// that is disabled, disabled in the session's tenant, or of a suspended
// tenant can be neither turned off nor given new recovery codes (403
// user_disabled, as its confirmation, its step-up and its password change
// are refused), whatever the session's recent second factor: a proxy that
// has not yet heard of the change still forwards the bearer, and whoever
// held it (the reason an admin disables an account) would take the factor
// off the account it comes back with, or keep ten ways past it. Nothing
// changes, and once active again both are allowed.
func TestFactorChangesOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	const email = "inactive-factor@example.com"
	tk, secret, codes := e.mfaUser(t, email)
	as := e.identityFor(t, tk)
	wantStatus(t, "step up", e.Send(t, as, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))}), http.StatusOK, "")
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	const qCodes = `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2`
	for _, tc := range inactiveStates() {
		exec(tc.off, as.UserID)
		wantStatus(t, "new recovery codes of a "+tc.name, e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil),
			http.StatusForbidden, "user_disabled")
		wantStatus(t, "disabling the factor of a "+tc.name, e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil),
			http.StatusForbidden, "user_disabled")
		if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, as.UserID); n != 1 {
			t.Fatalf("%s: %d active factors after the refusals, want 1", tc.name, n)
		}
		if n := e.count(t, qCodes, as.UserID, mfa.HashRecovery(as.UserID, codes[0])); n != 1 {
			t.Fatalf("%s: the recovery codes were replaced", tc.name)
		}
		exec(tc.on, as.UserID)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action IN ('user.mfa_disabled', 'user.mfa_recovery_codes_regenerated')`); n != 0 {
		t.Errorf("%d audit rows of refused changes", n)
	}
	// Active again: both are allowed.
	wantStatus(t, "new recovery codes once active", e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil), http.StatusOK, "")
	wantStatus(t, "disabling the factor once active", e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil), http.StatusNoContent, "")
}

// TestSecondStepOfADisabledAccountSpendsNoCode: a sign-in's second step
// (grant_type=mfa_otp with its mfa_token) for an account disabled since
// the password was checked is refused 403 user_disabled before the code is
// looked at, as a step-up and a confirmation are: the recovery code sent
// stays unspent and the mfa_token keeps its try, so once the account is
// active again the same code finishes the same sign-in. The code was
// spent, and the challenge used up, for a refusal.
func TestSecondStepOfADisabledAccountSpendsNoCode(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	const email = "disabled-second-step@example.com"
	tk, _, codes := e.mfaUser(t, email)
	uid := claims(t, tk.AccessToken)["sub"].(string)
	mfaToken := e.challenge(t, email)
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET status = 'disabled' WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "second step of a disabled account", e.mfaOTP(t, mfaToken, codes[0]), http.StatusForbidden, "user_disabled")
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NOT NULL`, uid); n != 0 {
		t.Errorf("%d recovery codes spent by a refused sign-in", n)
	}
	if n := e.count(t, `SELECT attempts FROM mfa_challenges WHERE user_id = $1 AND used_at IS NULL`, uid); n != 0 {
		t.Errorf("the challenge is used, or counts %d tries, after a refusal that looked at no code", n)
	}
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET status = 'active' WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "the same code once active", e.mfaOTP(t, mfaToken, codes[0]), http.StatusOK, "")
}

// TestRecoveryCodeSignInRacingReset: a second-factor sign-in whose
// recovery code was spent (and its challenge claimed) just before a
// password reset committed must not open a session after the reset: the
// reset ends the pending sign-ins (their challenges) along with the
// sessions, and the session would be stamped with the new token version.
// The request is held between spending the code and opening the session
// (at the lockout's release, whose row the test locks) while the reset
// commits.
func TestRecoveryCodeSignInRacingReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "reset-race@example.com"
	tk, _, codes := e.mfaUser(t, email)
	uid := claims(t, tk.AccessToken)["sub"].(string)
	mt := e.challenge(t, email)

	begin := func() pgx.Tx {
		t.Helper()
		tx, err := e.DB.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		return tx
	}
	waitingOn := func(table string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
				AND wait_event_type = 'Lock' AND query LIKE '%'||$1||'%'`, table) > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sign-in does not wait at %s", table)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	codeHold := begin() // holds the sign-in while it spends the code
	if _, err := codeHold.Exec(ctx, `SELECT 1 FROM mfa_recovery_codes WHERE user_id = $1 FOR UPDATE`, uid); err != nil {
		t.Fatal(err)
	}
	var (
		wg sync.WaitGroup
		r  apitest.Response
	)
	wg.Go(func() { r = e.mfaOTP(t, mt, codes[0]) })
	waitingOn("mfa_recovery_codes")
	releaseHold := begin() // then holds it after the code is spent
	if _, err := releaseHold.Exec(ctx, `SELECT 1 FROM login_attempts FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if err := codeHold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitingOn("login_attempts")
	// The reset: a new token version, every session and pending sign-in
	// ended.
	reset := begin()
	if _, err := reset.Exec(ctx, `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.New(e.DB.Pool, time.Hour, 0).RevokeAll(ctx, reset, uid, "", "password_reset"); err != nil {
		t.Fatal(err)
	}
	if err := reset.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := releaseHold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
		AND token_version = (SELECT token_version FROM users WHERE id = $1)`, uid); n != 0 {
		t.Errorf("live sessions of the current token version after the reset: %d, want 0 (answer %d %s)", n, r.Status, r.Body)
	}
	wantStatus(t, "sign-in racing the reset", r, http.StatusBadRequest, "invalid_grant")
}

// ownerAndEnrolledMember signs up an owner of a new tenant and seeds a
// member of it who enrols a second factor, from a session just started
// (enrolling needs a recent sign-in), which member carries.
func (e *env) ownerAndEnrolledMember(t *testing.T) (owner tokens, ownerAs *identity.Identity, member identity.Identity) {
	t.Helper()
	owner = e.signup(t, "owner@example.com", "Acme")
	ownerAs = e.identityFor(t, owner)
	member = e.SeedUserIn(t, owner.TenantID, "member@example.com", "member")
	if err := e.DB.Pool.QueryRow(context.Background(), `INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 hour') RETURNING id`,
		member.UserID, owner.TenantID).Scan(&member.SessionID); err != nil {
		t.Fatal(err)
	}
	en := e.enrol(t, &member)
	wantStatus(t, "member confirms", e.confirm(t, &member, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
	return owner, ownerAs, member
}

func TestAdminResetsMemberMFA(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	owner, ownerAs, member := e.ownerAndEnrolledMember(t)
	ctx := context.Background()
	// The session the member enrolled from goes before the sessions the
	// reset is to end.
	if _, err := e.DB.Pool.Exec(ctx, `DELETE FROM sessions WHERE id = $1`, member.SessionID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 hour'), ($1, $2, now() + interval '1 hour')`,
		member.UserID, owner.TenantID); err != nil {
		t.Fatal(err)
	}
	other := e.signup(t, "other@example.com", "Other")
	otherUser := claims(t, other.AccessToken)["sub"].(string)
	reset := func(as *identity.Identity, id string) apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/"+id+"/mfa", nil)
	}
	wantStatus(t, "member resets", reset(&member, member.UserID), http.StatusForbidden, "insufficient_scope")
	wantStatus(t, "own factor", reset(ownerAs, ownerAs.UserID), http.StatusForbidden, "forbidden")
	wantStatus(t, "bad id", reset(ownerAs, "not-a-uuid"), http.StatusBadRequest, "invalid_id")
	wantStatus(t, "another tenant's user", reset(ownerAs, otherUser), http.StatusNotFound, "not_found")
	var tvBefore int64
	if err := e.DB.Pool.QueryRow(ctx, `SELECT token_version FROM users WHERE id = $1`, member.UserID).Scan(&tvBefore); err != nil {
		t.Fatal(err)
	}
	// An email change a session of the member asked for, its link in
	// flight, and a verification link of the member's own address.
	if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at)
VALUES (sha256(gen_random_uuid()::text::bytea), 'verify_email', $1, 'elsewhere@example.net', now() + interval '1 day'),
       (sha256(gen_random_uuid()::text::bytea), 'verify_email', $1, 'member@example.com', now() + interval '1 day')`, member.UserID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "reset", reset(ownerAs, member.UserID), http.StatusNoContent, "")
	// The reset ends the sessions: an email change one of them asked for
	// must not move the account to another mailbox afterwards, as after a
	// sign-out everywhere or a password change.
	if n := e.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'elsewhere@example.net'`, member.UserID); n != 0 {
		t.Error("a pending email change survived the reset")
	}
	if n := e.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'member@example.com'`, member.UserID); n != 1 {
		t.Error("the own address's verification link did not survive the reset")
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, member.UserID); n != 0 {
		t.Error("the factor survived the reset")
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, member.UserID); n != 0 {
		t.Error("recovery codes survived the reset")
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'mfa_reset'`, member.UserID); n != 2 {
		t.Errorf("%d sessions revoked for mfa_reset, want 2", n)
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1 AND token_version = $2`, member.UserID, tvBefore+1); n != 1 {
		t.Error("token version not bumped")
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_reset' AND target_id = $1 AND actor_user_id = $2 AND data->>'sessions_revoked' = '2'`,
		member.UserID, ownerAs.UserID); n != 1 {
		t.Errorf("%d user.mfa_reset audit events, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.UserSubject(member.UserID)); n < 2 {
		t.Errorf("no invalidation for the reset member")
	}
	wantStatus(t, "reset again", reset(ownerAs, member.UserID), http.StatusNotFound, "not_found")
	// The member can sign in with the password alone again and enrol anew.
	if err := e.DB.Pool.QueryRow(ctx, `INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 hour') RETURNING id`,
		member.UserID, owner.TenantID).Scan(&member.SessionID); err != nil {
		t.Fatal(err)
	}
	e.enrol(t, &member)
}

// TestMachinesResetNoSecondFactor: a factor's reset is a recovery step
// for a person, decided by a person. A service account, an API key of a
// person and an API key of a service account are refused it whatever
// permissions they carry (403 principal_not_allowed), as they are adding
// or inviting a member: else a leaked client secret or key strips every
// member's second factor and signs them out. Nothing changes, nothing is
// mailed, no reset is audited. A person holding the service account's
// permissions still resets the factor.
func TestMachinesResetNoSecondFactor(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	ctx := context.Background()
	_, ownerAs, member := e.ownerAndEnrolledMember(t)
	const addr = "member@example.com" // ownerAndEnrolledMember's
	e.verifyAddress(t, member.UserID)
	// A service account holding admin, as POST /service-accounts makes one.
	sa := e.SeedUserIn(t, ownerAs.TenantID, "ci@service-accounts.invalid", "admin")
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET kind = 'service' WHERE id = $1`, sa.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO service_accounts (user_id, tenant_id, name) VALUES ($1, $2, 'ci')`, sa.UserID, ownerAs.TenantID); err != nil {
		t.Fatal(err)
	}
	sa.Principal = identity.PrincipalService
	saKey := e.AsKey(t, sa)
	ownerKey := e.AsKey(t, *ownerAs)
	if !sa.Has("users:write") {
		t.Fatalf("the service account lacks users:write: %v", sa.Permissions)
	}
	reset := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/"+member.UserID+"/mfa", nil)
	}
	var tv int64
	if err := e.DB.Pool.QueryRow(ctx, `SELECT token_version FROM users WHERE id = $1`, member.UserID).Scan(&tv); err != nil {
		t.Fatal(err)
	}
	codes := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, member.UserID)
	if codes == 0 {
		t.Fatal("the member has no recovery codes")
	}
	// The enrolment's confirmation ended the member's other sessions.
	ended := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL`, member.UserID)
	for _, c := range []struct {
		name string
		as   *identity.Identity
	}{{"service account", &sa}, {"owner's API key", &ownerKey}, {"service account's API key", &saKey}} {
		wantStatus(t, c.name, reset(c.as), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, member.UserID); n != 1 {
		t.Error("a refused reset removed the factor")
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, member.UserID); n != codes {
		t.Errorf("%d recovery codes after refused resets, want %d", n, codes)
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL`, member.UserID); n != ended {
		t.Errorf("refused resets ended %d sessions", n-ended)
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1 AND token_version = $2`, member.UserID, tv); n != 1 {
		t.Error("a refused reset bumped the token version")
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_reset'`); n != 0 {
		t.Errorf("%d resets audited", n)
	}
	if n := len(box.to(t, addr)); n != 0 {
		t.Fatalf("%d mails after refused resets, want none", n)
	}
	// A person holding the same permissions.
	admin := e.SeedUserIn(t, ownerAs.TenantID, "admin@example.com", "admin")
	if !slices.Equal(admin.Permissions, sa.Permissions) {
		t.Fatalf("the admin holds %v, the service account %v", admin.Permissions, sa.Permissions)
	}
	wantStatus(t, "an admin", reset(&admin), http.StatusNoContent, "")
	box.one(t, addr, 0)
}

// TestAdminMFAResetRacingLogoutGlobal: a tenant admin's reset of a
// member's second factor ended the member's sessions before it took the
// account's row, the reverse of a sign-out everywhere (and of a password
// change or reset): the two at once deadlocked, and PostgreSQL failed one
// of them with 500. The reset takes the account's row first now (its
// check locks it, and signOutAfterReset bumps it before ending the
// sessions: either alone prevents the deadlock), and the two run one
// after the other. The test holds the row so that the sign-out waits for
// it first.
func TestAdminMFAResetRacingLogoutGlobal(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	_, ownerAs, member := e.ownerAndEnrolledMember(t)

	var logout, reset apitest.Response
	e.DB.QueueBehindUser(t, member.UserID,
		func() { // the sign-out, at the account's row
			logout = e.Send(t, &member, http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "global"})
		},
		func() { // and the reset
			reset = e.Send(t, ownerAs, http.MethodDelete, "/api/v1/users/"+member.UserID+"/mfa", nil)
		},
	)
	wantStatus(t, "sign-out everywhere", logout, http.StatusNoContent, "")
	wantStatus(t, "reset", reset, http.StatusNoContent, "")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, member.UserID); n != 0 {
		t.Error("the factor survived the reset")
	}
}

// TestResetMFANeedsTheMembersPermissionsAndNoOtherTenant: an admin (every
// permission but tenant:write) cannot remove the second factor of the owner
// (who holds more); nor can anybody remove the factor of a member who
// belongs to another tenant too, which the factor also guards (else the
// owner of a tenant the victim was invited to could strip the factor that
// protects the victim's own tenant). Nothing is removed or revoked.
func TestResetMFANeedsTheMembersPermissionsAndNoOtherTenant(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	owner, _, _ := e.mfaUser(t, "boss@example.com")
	ownerAs := e.identityFor(t, owner)
	admin := e.SeedUserIn(t, ownerAs.TenantID, "admin@example.com", "admin")
	if admin.Has("tenant:write") {
		t.Fatal("the admin holds tenant:write")
	}
	reset := func(as *identity.Identity, id string) apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/"+id+"/mfa", nil)
	}
	unchanged := func(what, uid string) {
		t.Helper()
		if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, uid); n != 1 {
			t.Errorf("%s: the factor was removed", what)
		}
		if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'mfa_reset'`, uid); n != 0 {
			t.Errorf("%s: %d sessions revoked", what, n)
		}
	}
	wantStatus(t, "admin resets the owner", reset(&admin, ownerAs.UserID), http.StatusForbidden, "forbidden")
	unchanged("admin resets the owner", ownerAs.UserID)
	// Whether a member has a factor is not told to a caller who may not
	// reset it: an owner without one is refused the same way.
	owner2 := e.SeedUserIn(t, ownerAs.TenantID, "boss2@example.com", "owner")
	wantStatus(t, "admin resets an owner without a factor", reset(&admin, owner2.UserID), http.StatusForbidden, "forbidden")
	member := e.SeedUserIn(t, ownerAs.TenantID, "member@example.com", "member")
	wantStatus(t, "admin resets a member without a factor", reset(&admin, member.UserID), http.StatusNotFound, "not_found")
	// An admin demoted since its request was signed resets nothing: the
	// check reads what it holds now, not what the header says it held.
	mfaMember, _, _ := e.mfaUser(t, "mfa-member@example.com")
	mfaMemberAs := e.identityFor(t, mfaMember)
	if _, err := e.DB.Pool.Exec(context.Background(), `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, mfaMemberAs.TenantID, mfaMemberAs.UserID); err != nil {
		t.Fatal(err)
	}
	e.SeedMember(t, ownerAs.TenantID, mfaMemberAs.UserID, "member")
	demoted := e.SeedUserIn(t, ownerAs.TenantID, "demoted@example.com", "admin")
	if _, err := e.DB.Pool.Exec(context.Background(), `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, ownerAs.TenantID, demoted.UserID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "a demoted admin resets a member", reset(&demoted, mfaMemberAs.UserID), http.StatusForbidden, "forbidden")
	unchanged("a demoted admin resets a member", mfaMemberAs.UserID)
	wantStatus(t, "an admin resets the same member", reset(&admin, mfaMemberAs.UserID), http.StatusNoContent, "")

	// The victim's own tenant, and a tenant of somebody else that the
	// victim joined: its owner holds everything the victim holds there.
	victim, _, _ := e.mfaUser(t, "victim@example.com")
	victimAs := e.identityFor(t, victim)
	other := e.signup(t, "other@example.com", "Other")
	otherAs := e.identityFor(t, other)
	if _, err := e.DB.Pool.Exec(context.Background(), `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, otherAs.TenantID, victimAs.UserID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "a member of another tenant too", reset(otherAs, victimAs.UserID), http.StatusForbidden, "forbidden")
	unchanged("a member of another tenant too", victimAs.UserID)
	// Alone in the tenant, the same member's factor is reset.
	if _, err := e.DB.Pool.Exec(context.Background(), `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, victimAs.TenantID, victimAs.UserID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "a member of this tenant only", reset(otherAs, victimAs.UserID), http.StatusNoContent, "")
}

// TestResetMFANoFactorBeforeOtherTenants: a member with no active second
// factor (none, or one enrolled and not confirmed) has nothing to reset:
// 404 "no active second factor", as the self routes answer. The reset
// answered a member of other tenants 403 whether there was a factor or
// not, telling any admin of a tenant the member joined that the member
// belongs to other tenants. That is said only when there is a factor to
// reset now, and nothing is removed or revoked before.
func TestResetMFANoFactorBeforeOtherTenants(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	owner := e.signup(t, "owner@example.com", "Acme")
	ownerAs := e.identityFor(t, owner)
	joiner := e.signup(t, "joiner@example.com", "Own")
	joinerAs := e.identityFor(t, joiner)
	if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, ownerAs.TenantID, joinerAs.UserID); err != nil {
		t.Fatal(err)
	}
	reset := func() apitest.Response {
		return e.Send(t, ownerAs, http.MethodDelete, "/api/v1/users/"+joinerAs.UserID+"/mfa", nil)
	}
	noFactor := func(what string) {
		t.Helper()
		r := reset()
		wantStatus(t, what, r, http.StatusNotFound, "not_found")
		if p := r.Problem(t); p.Detail != "no active second factor" {
			t.Errorf("%s: detail %q, want %q", what, p.Detail, "no active second factor")
		}
		if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'mfa_reset'`, joinerAs.UserID); n != 0 {
			t.Errorf("%s: %d sessions revoked", what, n)
		}
	}
	noFactor("no factor")
	en := e.enrol(t, joinerAs)
	noFactor("a factor enrolled, not confirmed")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'pending'`, joinerAs.UserID); n != 1 {
		t.Error("the pending enrolment was removed")
	}
	wantStatus(t, "confirm", e.confirm(t, joinerAs, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
	wantStatus(t, "an active factor, other tenants", reset(), http.StatusForbidden, "forbidden")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, joinerAs.UserID); n != 1 {
		t.Error("the factor was removed")
	}
}

// TestResetMFARacingJoinElsewhere: a member joins another tenant (an
// invitation accepted there) while an admin resets the member's second
// factor. The reset found no other membership, the join not yet
// committed, and removed the factor that now guards the other tenant too,
// where this admin has no say. The reset locks the account's row before
// it looks, which a new membership's foreign key check holds against it:
// it waits for the join and refuses.
func TestResetMFARacingJoinElsewhere(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	owner := e.signup(t, "owner@example.com", "Acme")
	ownerAs := e.identityFor(t, owner)
	victim, _, _ := e.mfaUser(t, "victim@example.com")
	victimAs := e.identityFor(t, victim)
	// The victim belongs to Acme alone; Other is about to take it in.
	if _, err := e.DB.Pool.Exec(ctx, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, victimAs.TenantID, victimAs.UserID); err != nil {
		t.Fatal(err)
	}
	e.SeedMember(t, ownerAs.TenantID, victimAs.UserID, "member")
	other := e.identityFor(t, e.signup(t, "other@example.com", "Other"))
	join, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer join.Rollback(ctx)
	if _, err := join.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, other.TenantID, victimAs.UserID); err != nil {
		t.Fatal(err)
	}
	// Either the reset waits for the join, or it answered without.
	answer := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response {
		return e.Send(t, ownerAs, http.MethodDelete, "/api/v1/users/"+victimAs.UserID+"/mfa", nil)
	})
	if err := join.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := answer()
	wantStatus(t, "reset while the member joins another tenant", r, http.StatusForbidden, "forbidden")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, victimAs.UserID); n != 1 {
		t.Error("the factor guarding another tenant too was removed")
	}
}

// TestResetMFARacingTheFactorsChange: an admin's reset waits for the
// account's row while the member's own change of the factor holds it (a
// disable removing it, a confirmation activating it), and is decided on
// the factor as that change left it. The reset read the factor in the
// statement that took the lock, whose snapshot is older than the change:
// a factor the member had just disabled was "reset" (every session ended,
// the token version moved on, user.mfa_reset audited and mailed) though
// there was none left, and one just confirmed was answered 404 "no active
// second factor".
func TestResetMFARacingTheFactorsChange(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		confirm bool // else a disable
		status  int
		code    string
	}{
		{"disabled meanwhile", false, http.StatusNotFound, "not_found"},
		{"confirmed meanwhile", true, http.StatusNoContent, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, cheap)
			ctx := context.Background()
			var ownerAs *identity.Identity
			var member identity.Identity
			if c.confirm {
				ownerAs = e.identityFor(t, e.signup(t, "owner@example.com", "Acme"))
				member = e.SeedUserIn(t, ownerAs.TenantID, "member@example.com", "member")
				if err := e.DB.Pool.QueryRow(ctx, `INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 hour') RETURNING id`,
					member.UserID, ownerAs.TenantID).Scan(&member.SessionID); err != nil {
					t.Fatal(err)
				}
				e.enrol(t, &member)
			} else {
				_, ownerAs, member = e.ownerAndEnrolledMember(t)
			}
			var tv int64
			if err := e.DB.Pool.QueryRow(ctx, `SELECT token_version FROM users WHERE id = $1`, member.UserID).Scan(&tv); err != nil {
				t.Fatal(err)
			}
			// The member's change, as DELETE /users/me/mfa/totp and the
			// confirmation make it: the account's row, then the factor.
			change := e.DB.Hold(t, `SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`, member.UserID)
			if c.confirm {
				if _, err := change.Exec(ctx, `UPDATE mfa_totp SET status = 'active', confirmed_at = now() WHERE user_id = $1`, member.UserID); err != nil {
					t.Fatal(err)
				}
			} else if _, err := auth.DeleteFactor(ctx, change, member.UserID); err != nil {
				t.Fatal(err)
			}
			answer := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { // at the account's row
				return e.Send(t, ownerAs, http.MethodDelete, "/api/v1/users/"+member.UserID+"/mfa", nil)
			})
			if err := change.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, "reset", answer(), c.status, c.code)
			reset := 0
			if c.confirm {
				reset = 1
			}
			if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_reset' AND target_id = $1`, member.UserID); n != reset {
				t.Errorf("%d user.mfa_reset audit events, want %d", n, reset)
			}
			if n := e.count(t, `SELECT count(*) FROM users WHERE id = $1 AND token_version = $2`, member.UserID, tv+int64(reset)); n != 1 {
				t.Errorf("token version moved on by other than %d", reset)
			}
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'mfa_reset'`, member.UserID); (n > 0) != c.confirm {
				t.Errorf("%d sessions ended by the reset", n)
			}
			if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, member.UserID); n != 0 {
				t.Errorf("%d factors left, want none", n)
			}
		})
	}
}

// A sign-in that checked the old password and waits for its second factor
// ends with a password change: its mfa_token no longer opens a session.
func TestPasswordChangeEndsPendingSecondFactorSignIn(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, codes := e.mfaUser(t, "pending@example.com")
	pending := e.challenge(t, "pending@example.com")
	// The change takes a second factor given recently: the session steps up.
	r := e.Send(t, e.identityFor(t, tk), http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codes[0]})
	wantStatus(t, "step up", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	r = e.Send(t, e.identityFor(t, up), http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "a brand new password"})
	wantStatus(t, "password change", r, http.StatusOK, "")
	r = e.mfaOTP(t, pending, codeAt(t, secret, time.Now().Add(30*time.Second)))
	wantStatus(t, "mfa_otp with an mfa_token from before the change", r, http.StatusBadRequest, "invalid_grant")
}

// TestMFAGuessesCountPerAccount: whoever sends a second factor already has
// the password (or a session), so wrong codes count for the account over
// every client: an attacker with the password and many client addresses
// gets Threshold codes in all, not Threshold from each, across challenges
// and step-up alike.
func TestMFAGuessesCountPerAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "pa@example.com")
	as := e.identityFor(t, tk)
	guess := func(ip string) apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ClientIP: ip,
			Body: map[string]string{"grant_type": "mfa_otp", "mfa_token": e.challenge(t, "pa@example.com"), "code": "000000"}})
	}
	limit := auth.DefaultLockout().Threshold
	for i := range limit {
		wantStatus(t, "wrong code "+strconv.Itoa(i+1), guess("198.51.100."+strconv.Itoa(1+i)), http.StatusBadRequest, "invalid_grant")
	}
	// A fresh challenge from a fresh client address is refused all the same.
	r := guess("198.51.100.200")
	wantStatus(t, "a fresh client past the account's budget", r, http.StatusTooManyRequests, "too_many_requests")
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 {
		t.Errorf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	// So is a step-up of a session from yet another address, even with the
	// right code.
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", As: as, ClientIP: "198.51.100.201",
		Body: map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))}})
	wantStatus(t, "step-up from a fresh client during the lock", r, http.StatusTooManyRequests, "too_many_requests")
}

// TestRecoveryCodesRacingOnOneChallenge: several valid recovery codes sent
// at once on one mfa_token open one session and spend one code; the others
// are refused with their codes left unspent (each was spent before the
// challenge was claimed, and the losers' codes were lost).
func TestRecoveryCodesRacingOnOneChallenge(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	_, _, codes := e.mfaUser(t, "race@example.com")
	mt := e.challenge(t, "race@example.com")
	const n = 4
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	gun := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gun
			r := e.mfaOTP(t, mt, codes[i])
			mu.Lock()
			statuses[r.Status]++
			mu.Unlock()
		})
	}
	close(gun)
	wg.Wait()
	if statuses[http.StatusOK] != 1 || statuses[http.StatusOK]+statuses[http.StatusBadRequest] != n {
		t.Fatalf("statuses %v; want one sign-in and the others refused (400)", statuses)
	}
	if used := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE used_at IS NOT NULL`); used != 1 {
		t.Fatalf("%d recovery codes spent, want 1: the refused ones stay usable", used)
	}
	if s := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = (SELECT id FROM users WHERE email = 'race@example.com')`); s != 2 {
		t.Fatalf("%d sessions, want 2 (the signup's and the one sign-in)", s)
	}
}

// TestStepUpOfAMovedSession: an access token from before a tenant switch
// names the session's old tenant. Stepping up with it is refused (401
// invalid_token), like its refresh token: it would otherwise mint fresh
// access tokens for the old tenant, paired with a refresh token of the
// session that now belongs to the other one, for as long as its holder
// has codes. The token of the switch steps up, in the session's tenant.
func TestStepUpOfAMovedSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "mv@example.com")
	before := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, before.UserID, "member")
	r := e.Send(t, before, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	wantStatus(t, "switch", r, http.StatusOK, "")
	var sw tokens
	r.JSON(t, &sw)
	after := e.identityFor(t, sw)

	stepUp := func(as *identity.Identity, code string) apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
	}
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	r = stepUp(before, code)
	wantStatus(t, "step-up with the token from before the switch", r, http.StatusUnauthorized, "invalid_token")

	// The refused step-up spent nothing: the same code steps up.
	r = stepUp(after, code)
	wantStatus(t, "step-up with the token of the switch", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	if c := claims(t, up.AccessToken); c["tid"] != second.ID || c["sid"] != after.SessionID || up.TenantID != second.ID {
		t.Fatalf("stepped-up token: tid %v sid %v (answer's tenant %s), want %s %s", c["tid"], c["sid"], up.TenantID, second.ID, after.SessionID)
	}
}

// TestFactorChangesOfAMovedSession: the second factor can be neither
// turned off nor given new recovery codes with an access token of the
// tenant its session has since switched away from (401 invalid_token, as
// its confirmation and a step-up are refused), however recent the
// session's second factor: the session is no longer the one the token
// was issued for. Nothing changes; the token of the switch does both.
func TestFactorChangesOfAMovedSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, codes := e.mfaUser(t, "mv-factor@example.com")
	as := e.identityFor(t, tk)
	r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	before := e.identityFor(t, up)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, before.UserID, "member")
	r = e.Send(t, before, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": up.RefreshToken})
	wantStatus(t, "switch", r, http.StatusOK, "")
	var sw tokens
	r.JSON(t, &sw)
	after := e.identityFor(t, sw)

	const qCodes = `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2`
	wantStatus(t, "new recovery codes with the token from before the switch",
		e.Send(t, before, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil), http.StatusUnauthorized, "invalid_token")
	wantStatus(t, "disabling the factor with the token from before the switch",
		e.Send(t, before, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil), http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, before.UserID); n != 1 {
		t.Fatalf("%d active factors after the refusals, want 1", n)
	}
	if n := e.count(t, qCodes, before.UserID, mfa.HashRecovery(before.UserID, codes[0])); n != 1 {
		t.Fatal("the recovery codes were replaced")
	}
	// The token of the switch, in the session's tenant, does both.
	wantStatus(t, "new recovery codes with the token of the switch",
		e.Send(t, after, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil), http.StatusOK, "")
	wantStatus(t, "disabling the factor with the token of the switch",
		e.Send(t, after, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil), http.StatusNoContent, "")
}

// TestEnrolmentWithAMovedSession: an enrolment is not started with an
// access token of the tenant its session has since switched away from
// (401 invalid_token, as its confirmation is refused): nothing pending is
// stored, and the token of the switch starts it.
func TestEnrolmentWithAMovedSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "mv-enrol@example.com", "M")
	before := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, before.UserID, "member")
	r := e.Send(t, before, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	wantStatus(t, "switch", r, http.StatusOK, "")
	var sw tokens
	r.JSON(t, &sw)
	wantStatus(t, "enrolment with the token from before the switch",
		e.Send(t, before, http.MethodPost, "/api/v1/users/me/mfa/totp", nil), http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, before.UserID); n != 0 {
		t.Fatalf("%d pending secrets after the refusal", n)
	}
	e.enrol(t, e.identityFor(t, sw))
}

// TestRecentSignInToEnrolOrMoveTheAddress: enrolling a second factor and
// changing the email address lock the owner out of the account when done
// with a session taken from them (a leaked token whose refreshes keep its
// sign-in time): both need the session to have signed in within the last
// 5 minutes, else 401 insufficient_user_authentication with max_age, and
// nothing is written or mailed. A fresh sign-in does both.
func TestRecentSignInToEnrolOrMoveTheAddress(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "old@example.com", "Acme")
	as := e.identityFor(t, tk)
	ctx := context.Background()
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE sessions SET auth_time = now() - interval '6 minutes' WHERE id = $1`, as.SessionID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, method, path string
		body               any
	}{
		{"enrol", http.MethodPost, "/api/v1/users/me/mfa/totp", nil},
		{"email change", http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "taken-over@example.com"}},
	} {
		r := e.Send(t, as, c.method, c.path, c.body)
		wantStatus(t, c.what+" from an old sign-in", r, http.StatusUnauthorized, "insufficient_user_authentication")
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_user_authentication", max_age=300` {
			t.Errorf("%s: WWW-Authenticate %q", c.what, got)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, as.UserID); n != 0 {
		t.Errorf("%d second factors pending after a refused enrolment", n)
	}
	if n := e.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = 'taken-over@example.com'`); n != 0 {
		t.Errorf("%d mails to the new address after a refused change", n)
	}
	// A revoked session is no sign-in either.
	fresh := e.identityFor(t, e.login(t, "old@example.com"))
	wantStatus(t, "logout", e.Send(t, fresh, http.MethodPost, "/api/v1/auth/logout", nil), http.StatusNoContent, "")
	wantStatus(t, "enrol from a revoked session", e.Send(t, fresh, http.MethodPost, "/api/v1/users/me/mfa/totp", nil), http.StatusUnauthorized, "insufficient_user_authentication")
	// Signed in again: both go through.
	again := e.identityFor(t, e.login(t, "old@example.com"))
	e.enrol(t, again)
	wantStatus(t, "email change after signing in", e.Send(t, again, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "new@example.com"}), http.StatusAccepted, "")
}

// TestMFABackoffOutlivesItsLock: the count of wrong codes goes on after a
// lock has passed, however long the lock was, and the sweep keeps it: the
// first wrong code after the lock locks again (for twice as long), with no
// fresh round of free codes. With a 15-minute window the count restarted
// at every 15-minute lock (the longest), each time with 4 free codes.
func TestMFABackoffOutlivesItsLock(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, _, _ := e.mfaUser(t, "bo@example.com")
	as := e.identityFor(t, tk)
	guess := func() apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", As: as,
			Body: map[string]string{"grant_type": "mfa_otp", "code": "000000"}})
	}
	limit := auth.DefaultLockout().Threshold
	for i := range limit {
		wantStatus(t, "wrong code "+strconv.Itoa(i+1), guess(), http.StatusBadRequest, "invalid_grant")
	}
	wantStatus(t, "a code during the lock", guess(), http.StatusTooManyRequests, "too_many_requests")
	// The lock passes as a lock at its longest does: it ends more than the
	// password lockout's window (15 minutes) after the last wrong code.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE login_attempts
SET locked_until = now() - interval '1 second', last_attempt = now() - interval '16 minutes'`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SweepLoginAttempts(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "the first code after the lock", guess(), http.StatusBadRequest, "invalid_grant")
	r := guess()
	wantStatus(t, "the next code", r, http.StatusTooManyRequests, "too_many_requests")
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 2 {
		t.Errorf("Retry-After = %q, want at least 2 s (doubled)", r.Header.Get("Retry-After"))
	}
}

// TestLockedFactorLeavesTheOwnersTokenItsTries: someone with the password
// keeps the account's second factor locked with wrong codes; the owner's
// codes, refused by the lock unread (429), do not use up the tries of the
// owner's mfa_token, which finishes the sign-in once the lock has passed.
// Each refusal used to spend a try, so the token was dead (400
// invalid_grant) before the lock ended.
func TestLockedFactorLeavesTheOwnersTokenItsTries(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "held@example.com")
	thief := e.identityFor(t, tk)
	for i := range auth.DefaultLockout().Threshold {
		wantStatus(t, "wrong code "+strconv.Itoa(i+1), e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", As: thief,
			Body: map[string]string{"grant_type": "mfa_otp", "code": "000000"}}), http.StatusBadRequest, "invalid_grant")
	}
	owner := e.challenge(t, "held@example.com")
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	for i := range auth.ChallengeAttempts + 1 {
		wantStatus(t, "the owner's code during the lock "+strconv.Itoa(i+1), e.mfaOTP(t, owner, code), http.StatusTooManyRequests, "too_many_requests")
	}
	if n := e.count(t, `SELECT attempts FROM mfa_challenges WHERE used_at IS NULL`); n != 0 {
		t.Errorf("the owner's mfa_token has %d tries spent, want 0", n)
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE login_attempts SET locked_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "the owner's code after the lock", e.mfaOTP(t, owner, code), http.StatusOK, "")
}

// TestUnreadableSecretSpendsNoTries: a TOTP secret this server cannot
// read, sealed under a key id missing from MFA_ENCRYPTION_KEYS or under a
// listed id whose key is not the one that sealed it (an id reused for new
// material), answers 503 mfa_unavailable, never a 500, and its codes,
// never looked at, spend neither the account's tries nor the mfa_token's:
// the owner, told to use a recovery code, still can.
func TestUnreadableSecretSpendsNoTries(t *testing.T) {
	t.Parallel()
	for name, keys := range map[string]string{
		"missing key": "k9:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
		"wrong key":   "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32)),
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, cheap)
			tk, secret, codes := e.mfaUser(t, "unread@example.com")
			as := e.identityFor(t, tk)
			var uid string
			if err := e.DB.Pool.QueryRow(context.Background(), `SELECT id::text FROM users WHERE email = 'unread@example.com'`).Scan(&uid); err != nil {
				t.Fatal(err)
			}
			keyID, sealed, err := testSealer(t, keys).Seal([]byte(secret), []byte(uid))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE mfa_totp SET key_id = $2, secret_sealed = $3 WHERE user_id = $1`, uid, keyID, sealed); err != nil {
				t.Fatal(err)
			}
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			mt := e.challenge(t, "unread@example.com")
			const qCounted = `SELECT coalesce(sum(failures), 0) FROM login_attempts`
			before := e.count(t, qCounted)
			for i := range auth.ChallengeAttempts + auth.DefaultLockout().Threshold {
				wantStatus(t, "sign-in code "+strconv.Itoa(i+1), e.mfaOTP(t, mt, code), http.StatusServiceUnavailable, "mfa_unavailable")
				wantStatus(t, "step-up code "+strconv.Itoa(i+1), e.Send(t, as, http.MethodPost, "/api/v1/auth/token",
					map[string]string{"grant_type": "mfa_otp", "code": code}), http.StatusServiceUnavailable, "mfa_unavailable")
			}
			if n := e.count(t, qCounted) - before; n != 0 {
				t.Errorf("%d attempts counted for codes never looked at, want 0", n)
			}
			wantStatus(t, "recovery code on the same mfa_token", e.mfaOTP(t, mt, codes[0]), http.StatusOK, "")

			// A pending enrolment whose secret cannot be read: 503, and
			// the answer says to start again, which works.
			ptk := e.signup(t, "pending-unread@example.com", "P")
			pas := e.identityFor(t, ptk)
			en := e.enrol(t, pas)
			keyID, sealed, err = testSealer(t, keys).Seal([]byte(en.Secret), []byte(pas.UserID))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE mfa_totp SET key_id = $2, secret_sealed = $3 WHERE user_id = $1`, pas.UserID, keyID, sealed); err != nil {
				t.Fatal(err)
			}
			r := e.confirm(t, pas, codeAt(t, en.Secret, time.Now()))
			wantStatus(t, "confirming an unreadable enrolment", r, http.StatusServiceUnavailable, "mfa_unavailable")
			if p := r.Problem(t); !strings.Contains(p.Detail, "start the enrolment again") {
				t.Errorf("confirming an unreadable enrolment: %q, want it to say to start again", p.Detail)
			}
			en = e.enrol(t, pas)
			wantStatus(t, "confirming the new enrolment", e.confirm(t, pas, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
		})
	}
}

// signedAs is the identity a proxy signs for a request carrying tk: the
// token's authentication methods and time included.
func (e *env) signedAs(t testing.TB, tk tokens) *identity.Identity {
	t.Helper()
	as := e.identityFor(t, tk)
	as.AMR, _, as.AuthTime = amrOf(t, tk.AccessToken)
	return as
}

// TestRecentAuthenticationIsTheTokens: what needs a recent sign-in or
// second factor is judged on the access token the request carries, not
// on its session alone. A step-up (or an enrolment's confirmation)
// renews the session's authentication, but an access token issued before
// it, held by someone else, still says how long ago its holder signed
// in: it must not move the account's address or remove the factor
// because the owner has just proven the factor on the same session.
func TestRecentAuthenticationIsTheTokens(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "fresh@example.com")
	sensitive := []struct {
		what, method, path string
		body               any
	}{
		{"email change", http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "thief@example.com"}},
		{"disable the factor", http.MethodDelete, "/api/v1/users/me/mfa/totp", nil},
		{"new recovery codes", http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil},
	}
	// The sign-up's token: a password only, though its session has given
	// the second factor since (the enrolment's confirmation).
	pwdOnly := e.signedAs(t, tk)
	if !slices.Equal(pwdOnly.AMR, []string{"pwd"}) {
		t.Fatalf("sign-up token amr %v", pwdOnly.AMR)
	}
	for _, c := range sensitive[1:] {
		wantStatus(t, c.what+" with a token without the factor", e.Send(t, pwdOnly, c.method, c.path, c.body),
			http.StatusUnauthorized, "insufficient_user_authentication")
	}
	// A token of the session from a sign-in ten minutes ago, both
	// factors; then the owner steps the session up.
	stale := e.signedAs(t, tk)
	stale.AMR, stale.AuthTime = []string{"pwd", "otp"}, time.Now().Add(-10*time.Minute).Unix()
	r := e.Send(t, pwdOnly, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	for _, c := range sensitive {
		wantStatus(t, c.what+" with a token of an old sign-in", e.Send(t, stale, c.method, c.path, c.body),
			http.StatusUnauthorized, "insufficient_user_authentication")
	}
	if n := e.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = 'thief@example.com'`); n != 0 {
		t.Errorf("%d mails to the new address after a refused change", n)
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, stale.UserID); n != 1 {
		t.Errorf("%d active factors, want 1", n)
	}
	// The stepped-up token does all of it.
	owner := e.signedAs(t, up)
	wantStatus(t, "email change after the step-up", e.Send(t, owner, http.MethodPatch, "/api/v1/users/me",
		map[string]string{"email": "fresh2@example.com"}), http.StatusAccepted, "")
	wantStatus(t, "new codes after the step-up", e.Send(t, owner, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil), http.StatusOK, "")
	wantStatus(t, "disable after the step-up", e.Send(t, owner, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil), http.StatusNoContent, "")
}

// TestConfirmIsNoStepUp: confirming a factor activates it but does not
// make the session's sign-in one with a second factor given now. A
// step-up reissues the session's refresh token to whoever gave the code;
// the confirmation hands out none, so whoever else held the session's
// refresh token (a thief its owner enrols a factor to shut out) would
// refresh into "otp" and a fresh auth time, and with them regenerate the
// recovery codes or disable the factor. The owner steps up with the next
// code when a route asks for one.
func TestConfirmIsNoStepUp(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, _, _ := e.mfaUser(t, "confirm@example.com")
	_, _, signedAt := amrOf(t, tk.AccessToken)
	r := e.refresh(t, tk.RefreshToken)
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	var next tokens
	r.JSON(t, &next)
	amr, _, at := amrOf(t, next.AccessToken)
	if slices.Contains(amr, "otp") || at != signedAt {
		t.Fatalf("after the confirmation the session's refresh gave amr %v, auth time %d (the sign-in's: %d)", amr, at, signedAt)
	}
	wantStatus(t, "new recovery codes with the refreshed token", e.Send(t, e.signedAs(t, next), http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil),
		http.StatusUnauthorized, "insufficient_user_authentication")
}

// TestConfirmEndsTheOtherSessions: confirming a factor ends every other
// session of the account and its pending email changes, as a password
// change does, in the confirmation's transaction, while the confirming
// session goes on. An owner enrolling a factor to shut out whoever holds
// another session (a leaked access or refresh token) shut out nobody: that
// session kept refreshing, and the email change it asked for still moved
// the account to its mailbox.
func TestConfirmEndsTheOtherSessions(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "ends@example.com", "E")
	as := e.identityFor(t, tk)
	other := e.login(t, "ends@example.com")
	otherAs := e.identityFor(t, other)
	wantStatus(t, "email change from the other session", e.Send(t, otherAs, http.MethodPatch, "/api/v1/users/me",
		map[string]string{"email": "elsewhere@example.com"}), http.StatusAccepted, "")
	const qChanges = `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'verify_email' AND email = 'elsewhere@example.com'`
	if n := e.count(t, qChanges, as.UserID); n != 1 {
		t.Fatalf("%d pending email changes, want 1", n)
	}

	en := e.enrol(t, as)
	wantStatus(t, "confirm", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")

	if r := e.refresh(t, other.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("the other session refreshed after the confirmation: %d %s", r.Status, r.Body)
	}
	r := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + as.UserID + "?tenant_id=" + as.TenantID, Service: true})
	var p identity.Projection
	r.JSON(t, &p)
	// Refused by the token version the confirmation moved on
	// (TestConfirmMovesTheTokenVersionOn).
	if tv := int64(claims(t, other.AccessToken)["tv"].(float64)); tv >= p.TokenVersion || p.SessionRevoked(as.SessionID) {
		t.Errorf("projection = %+v, want session %s refused by its version (tv %d) and %s live", p, otherAs.SessionID, tv, as.SessionID)
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = $2`, otherAs.SessionID, sessions.ReasonMFAEnabled); n != 1 {
		t.Errorf("the other session is not ended as %s", sessions.ReasonMFAEnabled)
	}
	if n := e.count(t, qChanges, as.UserID); n != 0 {
		t.Errorf("%d email changes still pending after the confirmation", n)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_enabled' AND (data->>'sessions_revoked')::int = 1`); n != 1 {
		t.Errorf("%d user.mfa_enabled audit rows counting one session ended, want 1", n)
	}
	// The confirming session goes on.
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the confirming session's refresh: %d %s", r.Status, r.Body)
	}
}

// TestConfirmMovesTheTokenVersionOn: the confirmation's end of the other
// sessions moves the account's token version on in its transaction, as a
// sign-out everywhere and a password change do, with the user's
// invalidation in the outbox: the other sessions' access tokens are
// refused by the version (the projection need not list them, and a user
// with thousands of sessions keeps a projection the proxy can hold), and so
// is every access token issued before. The confirming session goes on,
// stamped with the new version: its refresh gives a token of it.
func TestConfirmMovesTheTokenVersionOn(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	const email = "confirm-version@example.com"
	tk := e.signup(t, email, "V")
	as := e.identityFor(t, tk)
	other := e.login(t, email)
	otherAs := e.identityFor(t, other)
	en := e.enrol(t, as)
	wantStatus(t, "confirm", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")

	r := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + as.UserID + "?tenant_id=" + as.TenantID, Service: true})
	apitest.WantStatus(t, r, http.StatusOK)
	var p identity.Projection
	r.JSON(t, &p)
	for _, tok := range []string{other.AccessToken, tk.AccessToken} {
		if tv := int64(claims(t, tok)["tv"].(float64)); tv >= p.TokenVersion {
			t.Errorf("an access token issued before the confirmation has tv %d, the account's version is %d: not refused by it", tv, p.TokenVersion)
		}
	}
	if p.SessionRevoked(otherAs.SessionID) || p.SessionRevoked(as.SessionID) {
		t.Errorf("revoked sessions listed: %v, want none (the version refuses the ended ones)", p.RevokedSessions)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
		invalidation.UserSubject(as.UserID), invalidation.ReasonUserMFAEnabled); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	// The confirming session goes on, at the new version.
	r = e.refresh(t, tk.RefreshToken)
	wantStatus(t, "the confirming session's refresh", r, http.StatusOK, "")
	var next tokens
	r.JSON(t, &next)
	if tv := int64(claims(t, next.AccessToken)["tv"].(float64)); tv != p.TokenVersion {
		t.Errorf("the refreshed token has tv %d, want the account's %d", tv, p.TokenVersion)
	}
	wantStatus(t, "the other session's refresh", e.refresh(t, other.RefreshToken), http.StatusBadRequest, "invalid_grant")
}

// TestPasswordSignInRacingConfirmation: a password sign-in that found no
// active factor and opens its session after a confirmation committed
// must not hold a session without the second factor, which the
// confirmation's end of the other sessions never saw. The sign-in is held
// at the membership its session is created under (which the test locks)
// while the factor is confirmed; it then answers mfa_required.
func TestPasswordSignInRacingConfirmation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "signin-confirm-race@example.com"
	tk := e.signup(t, email, "R")
	as := e.identityFor(t, tk)
	en := e.enrol(t, as)
	hold, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Rollback(ctx) })
	if _, err := hold.Exec(ctx, `SELECT 1 FROM memberships WHERE user_id = $1 FOR UPDATE`, as.UserID); err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		signedIn apitest.Response
	)
	wg.Go(func() {
		signedIn = e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
	})
	for deadline := time.Now().Add(10 * time.Second); e.count(t, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO sessions%'`) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sign-in does not wait at the membership")
		}
	}
	wantStatus(t, "confirm", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if signedIn.Status == http.StatusOK {
		var tk tokens
		signedIn.JSON(t, &tk)
		amr, _, _ := amrOf(t, tk.AccessToken)
		t.Fatalf("a password sign-in that opened its session after the factor was confirmed got tokens (amr %v)", amr)
	}
	wantStatus(t, "password sign-in after the confirmation", signedIn, http.StatusUnauthorized, "mfa_required")
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2`, as.UserID, as.SessionID); n != 0 {
		t.Errorf("%d live sessions besides the confirming one, want 0", n)
	}
}

// Recovery codes are stored hashed with their account's id: stored as the
// code's hash alone, one guess was tested against every account's codes
// at once by whoever read the table. Codes an earlier release stored in
// that form are still taken, once each.
func TestRecoveryCodesHashedPerAccount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "per-account@example.com"
	tk, _, codes := e.mfaUser(t, email)
	uid := claims(t, tk.AccessToken)["sub"].(string)
	for _, c := range codes {
		if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2`, uid, mfa.LegacyHashRecovery(c)); n != 0 {
			t.Fatalf("code %q stored as the hash of the code alone", c)
		}
		if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2`, uid, mfa.HashRecovery(uid, c)); n != 1 {
			t.Fatalf("code %q: %d rows hold its hash with the account's id, want 1", c, n)
		}
	}
	if bytes.Equal(mfa.HashRecovery(uid, codes[0]), mfa.HashRecovery(uuid.NewString(), codes[0])) {
		t.Fatal("one code hashes alike for two accounts")
	}
	// A code stored by an earlier release: taken once, then spent.
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE mfa_recovery_codes SET code_hash = $2 WHERE user_id = $1 AND code_hash = $3`,
		uid, mfa.LegacyHashRecovery(codes[0]), mfa.HashRecovery(uid, codes[0])); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "a legacy code", e.mfaOTP(t, e.challenge(t, email), codes[0]), http.StatusOK, "")
	wantStatus(t, "a legacy code again", e.mfaOTP(t, e.challenge(t, email), codes[0]), http.StatusBadRequest, "invalid_grant")
	wantStatus(t, "a code of the new form", e.mfaOTP(t, e.challenge(t, email), codes[1]), http.StatusOK, "")
}

// TestSweepChallengesBesideARevocation: the sweep of expired sign-in
// challenges passes over the challenges another transaction holds, so it
// cannot deadlock with the end of a user's sessions and pending sign-ins
// (RevokeAll: a password change or reset, a global logout, a factor
// enabled or reset), which reaches them by user, while the sweep took them
// by expiry: each held a challenge the other waited for, and PostgreSQL
// failed one of them (the password change with a 500).
func TestSweepChallengesBesideARevocation(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	ten := e.SeedTenant(t, "Acme")
	uid := e.SeedUser(t, "ada@example.test", "Ada")
	other := e.SeedUser(t, "bob@example.test", "Bob")
	// Two expired challenges of Ada's, the one that expired last written
	// first.
	later, sooner := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for _, c := range []struct {
		hash []byte
		ago  string
	}{{later, "10 minutes"}, {sooner, "20 minutes"}} {
		if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO mfa_challenges (token_hash, user_id, tenant_id, expires_at)
VALUES ($1, $2, $3, now() - $4::interval)`, c.hash, uid, ten.ID, c.ago); err != nil {
			t.Fatal(err)
		}
	}
	// Live challenges enough of another user's that each statement reads
	// its rows through its index, as on a server: the sweep by expiry, the
	// revocation by user.
	if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO mfa_challenges (token_hash, user_id, tenant_id, expires_at)
SELECT sha256(i::text::bytea), $1, $2, now() + interval '5 minutes' FROM generate_series(1, 5000) i`, other, ten.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(ctx, `ANALYZE mfa_challenges`); err != nil {
		t.Fatal(err)
	}
	hold := e.DB.Hold(t, `SELECT 1 FROM mfa_challenges WHERE token_hash = $1 FOR UPDATE`, later)
	revoked := make(chan error, 1)
	go func() {
		revoked <- pgx.BeginFunc(ctx, e.DB.Pool, func(tx pgx.Tx) error {
			_, err := e.svc.Sessions().RevokeAll(ctx, tx, uid, "", sessions.ReasonPasswordChange)
			return err
		})
	}()
	e.DB.WaitForLockWaiters(t, 1)
	swept := dbtest.AnsweredOrWaitingFor(t, e.DB, 2, func() error {
		_, err := e.svc.SweepChallenges(ctx)
		return err
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if sweepErr := swept(); sweepErr != nil {
		t.Errorf("SweepChallenges beside a revocation = %v", sweepErr)
	}
	if err := <-revoked; err != nil {
		t.Errorf("RevokeAll beside the sweep = %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM mfa_challenges WHERE user_id = $1`, uid); n != 0 {
		t.Errorf("%d challenges of Ada's left, want 0", n)
	}
}
