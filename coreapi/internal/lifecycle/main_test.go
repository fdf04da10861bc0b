package lifecycle_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

var coverage = apitest.NewCoverage()

// operations are the documented operations this package serves.
var operations = []string{"verifyEmail", "resendVerification", "forgotPassword", "resetPassword",
	"listInvitations", "createInvitation", "revokeInvitation", "resendInvitation", "acceptInvitation",
	"listMyInvitations", "pageVerifyEmail", "pageResetPassword", "pageAcceptInvitation"}

// TestMain fails a full run that leaves one of the package's operations
// without a successful, document-conforming response.
func TestMain(m *testing.M) { coverage.Main(m, operations) }

const pw = "correct horse battery"

var cheap = password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

type env struct {
	*apitest.Env
	smtp   *mailtest.Server
	sender *mail.Sender
	hasher *password.Hasher
	lc     *lifecycle.Service
	// beforeIssue is the auth service's BeforeIssue hook (nil: none).
	beforeIssue atomic.Pointer[func(sessionID string)]
}

func start(t *testing.T, limits lifecycle.Limits) *env {
	t.Helper()
	return startWith(t, limits, nil)
}

// startWith is start with the permission catalog cat (nil: the built-in
// one) in every part that reads it.
func startWith(t *testing.T, limits lifecycle.Limits, cat *permissions.Catalog) *env {
	t.Helper()
	return startHasher(t, limits, cat, password.New(cheap, 0))
}

// startHasher is startWith with the password hasher h in every part.
func startHasher(t *testing.T, limits lifecycle.Limits, cat *permissions.Catalog, h *password.Hasher) *env {
	t.Helper()
	return startOpts(t, startOptions{limits: limits, cat: cat, hasher: h})
}

// startOptions configure startOpts.
type startOptions struct {
	limits lifecycle.Limits
	cat    *permissions.Catalog
	hasher *password.Hasher
	// wide also serves what an account can leave behind: API keys (with a
	// pepper), service accounts and their client_credentials grant, and
	// TOTP enrolment (with MFA keys).
	wide bool
	// lockout is the password guesses' backoff (zero: the default).
	lockout auth.Lockout
	// checks is PASSWORD_CHECKS_PER_HOUR (0: the default).
	checks int
	// db is another env's database, served too (nil: a database of its
	// own): two replicas of one deployment, with other catalogs say.
	db *dbtest.DB
}

// startWide is start with the API-key, service-account and MFA routes.
func startWide(t *testing.T) *env {
	t.Helper()
	return startOpts(t, startOptions{hasher: password.New(cheap, 0), wide: true})
}

func startOpts(t *testing.T, so startOptions) *env {
	t.Helper()
	limits, cat, h := so.limits, so.cat, so.hasher
	ring, _ := keytest.Ring(t)
	x := &env{smtp: mailtest.Start(t), hasher: h}
	// The tenant API's POST /users counts against the invitations' limits,
	// as coreapi wires it.
	x.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Passwords: h, Users: users.Limits{Invitations: limits.Invitations}, DB: so.db, Configure: func(o *httpapi.Options) {
		o.Catalog = cat
		store := sessions.New(o.Pool, time.Hour, 10*time.Second)
		ao := auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h, Catalog: cat,
			Sessions: store, Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute, Lockout: so.lockout, PasswordChecksPerHour: so.checks,
			BeforeIssue: func(sessionID string) {
				if f := x.beforeIssue.Load(); f != nil {
					(*f)(sessionID)
				}
			}}
		if so.wide {
			ks, err := apikeys.New(apikeys.Options{Logger: o.Logger, Pool: o.Pool, Pepper: []byte("0123456789abcdef0123456789abcdef"), Catalog: cat})
			if err != nil {
				t.Fatal(err)
			}
			sa, err := serviceaccounts.New(serviceaccounts.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Sessions: store,
				Projections: projection.NewStore(o.Pool, 16*time.Minute, cat), Limiter: ratelimit.New(o.Pool), Catalog: cat,
				Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute,
				PublicBaseURL: "http://localhost:8080/", APIKeys: ks})
			if err != nil {
				t.Fatal(err)
			}
			mk, err := mfa.ParseKeys("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
			if err != nil {
				t.Fatal(err)
			}
			if ao.MFA, err = mfa.NewSealer(mk); err != nil {
				t.Fatal(err)
			}
			ao.ClientCredentials = sa
			o.Register = append(o.Register, ks.Register, sa.Register)
			o.ErrorMappers = append(o.ErrorMappers, apikeys.MapError, serviceaccounts.ErrorProblem)
		}
		svc, err := auth.New(ao)
		if err != nil {
			t.Fatal(err)
		}
		lc, err := lifecycle.New(lifecycle.Options{Logger: o.Logger, Pool: o.Pool, Auth: svc, Passwords: h, Limits: limits, Catalog: cat})
		if err != nil {
			t.Fatal(err)
		}
		x.lc = lc
		o.Register = append(o.Register, svc.Register, lc.Register)
		o.ErrorMappers = append(o.ErrorMappers, lifecycle.MapError)
	}})
	// Resets still running after their answer finish before the database
	// goes (cleanups run last registered first).
	t.Cleanup(x.lc.WaitResets)
	// Show the pages' 303s instead of following them.
	x.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tr, err := mail.ParseSMTPURL(x.smtp.URL())
	if err != nil {
		t.Fatal(err)
	}
	x.sender, err = mail.NewSender(mail.SenderOptions{Pool: x.DB.Pool, Transport: tr, From: "no-reply@example.com",
		Links: mail.DefaultLinks("http://localhost:8080"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: time.Millisecond, LinkCheck: x.lc.MailLinkRefusal})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// mail sends what is queued and returns the newest mail to rcpt whose
// subject contains subject.
func (x *env) mail(t *testing.T, rcpt, subject string) mailtest.Message {
	t.Helper()
	x.flush(t)
	return x.smtp.WaitFor(t, rcpt, subject, 5*time.Second)
}

// flush first waits for the password resets that run after their answer.
func (x *env) flush(t *testing.T) {
	t.Helper()
	x.lc.WaitResets()
	for {
		n, err := x.sender.SendDue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// mailsTo counts the mails received for rcpt.
func (x *env) mailsTo(rcpt string) int {
	n := 0
	for _, m := range x.smtp.Messages() {
		for _, r := range m.Rcpt {
			if strings.EqualFold(r, rcpt) {
				n++
			}
		}
	}
	return n
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TenantID     string `json:"tenant_id"`
}

type claims struct {
	Sub string `json:"sub"`
	Tid string `json:"tid"`
	Sid string `json:"sid"`
	Tv  int64  `json:"tv"`
	// Amr and AuthTime are the session's authentication.
	Amr      []string `json:"amr"`
	AuthTime int64    `json:"auth_time"`
}

func claimsOf(t *testing.T, jwt string) claims {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// account is a signed-up user with its tokens and the identity the proxy
// would forward for them.
type account struct {
	email string
	tok   tokens
	c     claims
	id    identity.Identity
}

func (x *env) signup(t *testing.T, email string) account {
	t.Helper()
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": email, "password": pw, "tenant_name": "T of " + email, "display_name": "D " + email})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup %s: %d %s", email, r.Status, r.Body)
	}
	a := account{email: email}
	r.JSON(t, &a.tok)
	a.c = claimsOf(t, a.tok.AccessToken)
	a.id = x.identity(t, a.c)
	return a
}

func (x *env) identity(t *testing.T, c claims) identity.Identity {
	t.Helper()
	id := x.IdentityOf(t, c.Sub, c.Tid)
	id.SessionID = c.Sid
	return id
}

// count first waits for the password resets that run after their
// answer.
func (x *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	x.lc.WaitResets()
	var n int
	if err := x.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// liveLinks counts the user's mailed tokens of a purpose still stored.
func (x *env) liveLinks(t *testing.T, userID, purpose string) int {
	t.Helper()
	return x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = $2`, userID, purpose)
}

// atOnce runs send n times concurrently and waits for all of them.
func atOnce(n int, send func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send()
		}()
	}
	wg.Wait()
}

func (x *env) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := x.DB.Pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func wantProblem(t *testing.T, r apitest.Response, status int, code string) {
	t.Helper()
	apitest.WantProblem(t, r, status, code)
}

func wantStatus(t *testing.T, r apitest.Response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
}

type me struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

func (x *env) me(t *testing.T, a account) me {
	t.Helper()
	r := x.Get(t, &a.id, "/api/v1/users/me")
	wantStatus(t, r, http.StatusOK)
	var m me
	r.JSON(t, &m)
	return m
}

// projection fetches the proxy's view of a, as the proxy does.
func (x *env) projection(t *testing.T, a account) identity.Projection {
	t.Helper()
	r := x.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + a.c.Sub + "?tenant_id=" + a.c.Tid, Service: true})
	wantStatus(t, r, http.StatusOK)
	var p identity.Projection
	r.JSON(t, &p)
	return p
}

func (x *env) token(t *testing.T, email, password string) apitest.Response {
	t.Helper()
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "password", "email": email, "password": password})
}

func form(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv[i] + "=" + kv[i+1])
	}
	return b.String()
}

func limit(n int) ratelimit.Limit { return ratelimit.Limit{N: n, Window: time.Hour} }
