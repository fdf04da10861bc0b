// Package oauth signs users in through generic OpenID Connect providers
// (authorization code flow with PKCE S256 and a nonce).
//
// The flow's state lives in PostgreSQL (oauth_states), not in memory: a
// flow started on one coreapi replica finishes on any other. Only the
// SHA-256 of the state value is stored; the row expires after 10 minutes,
// is consumed once with DELETE … RETURNING, and expired rows are swept.
// The state is bound to the browser that started the flow: authorize sets
// a random value in a __Host- cookie and stores its hash with the state;
// the callback consumes the state only together with that cookie.
// Starting a flow is rate-limited per client IP and the table is capped.
//
// The callback never hands out tokens: it opens the session and gives the
// browser a one-time hand-over code (auth.CreateHandover), redirecting to
// the app's allow-listed return_to?code=… (or answering {code} as JSON when
// no OAUTH_ALLOWED_RETURN_URLS is set); the app exchanges the code with
// grant_type=oauth_handover. A refusal once the flow's state is spent and
// the provider's answer checked goes to the same return_to, as an OAuth
// error response (refusalTo). The code is bound to the app's flow as an
// authorization code is to its client (RFC 7636): with an allow-list,
// authorize requires the app's S256 code_challenge, and the exchange needs
// its code_verifier, so a code from another sign-in planted at return_to
// (login CSRF) or read from a URL is worth nothing.
// A provider's issuer and subject are linked to a user through the
// identities table: by the account's verified address at a first sign-in,
// or by the account's signed-in owner (POST /users/me/identities/{provider}
// starts a flow that names the account and answers a one-time URL, which
// the owner's browser opens to be bound to the flow; its callback opens
// no session and links nothing, but hands return_to a one-time link code
// that only the session that started the flow can confirm, with
// POST /users/me/identities/{provider}/confirm).
package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// StateTTL is how long a started sign-in may take.
const StateTTL = 10 * time.Minute

// LinkTicketTTL is how long the one-time URL that a link's start answers
// (GET /auth/oauth/{provider}/link?ticket=…) may wait to be opened.
const LinkTicketTTL = time.Minute

// LinkCodeTTL is how long the link code that a link's callback hands to
// return_to may wait to be confirmed (POST
// /users/me/identities/{provider}/confirm).
const LinkCodeTTL = time.Minute

// Defaults of the abuse bounds of authorize.
const (
	DefaultAuthorizePerMinute = 20
	DefaultMaxPendingStates   = 10000
)

// maxSubject is the longest sub claim OpenID Connect Core (section 2)
// allows: 255 ASCII characters.
const maxSubject = 255

// CookiePrefix starts the name of the cookie that binds a state to the
// browser; the rest of the name is derived from the state, so flows in
// several tabs do not overwrite each other's cookie.
const CookiePrefix = "__Host-tg_oauth_"

// MaxBindingCookies bounds the binding cookies one browser carries: a
// start that finds this many clears them all rather than add one more,
// so abandoned starts (or a page that keeps sending the browser to
// authorize) cannot grow its requests to this host past the server's
// header limit for the cookies' 10 minutes.
const MaxBindingCookies = 8

// MaxProviderResponse bounds each answer of a provider (discovery, key
// set, token endpoint) that is read: go-oidc reads the discovery document
// and the key set whole, so an answer without end would be held in memory
// until the client's timeout. x/oauth2 reads at most as much of a token
// response.
const MaxProviderResponse = 1 << 20

// maxAgeDigits bounds max_age: at most 9 digits (about 31 years).
const maxAgeDigits = 9

// AuthTimeLeeway is how much older than max_age a provider's auth_time may
// be: the redirects (and a consent page) between the provider's sign-in
// and the callback take time, and max_age=0 (authenticate again now) is
// never met to the second.
const AuthTimeLeeway = time.Minute

// IssuedAtLeeway is how far ahead of this clock a provider's ID token may
// say it was issued (iat): the two clocks differ a little. A token issued
// later than that was not made for this sign-in.
const IssuedAtLeeway = time.Minute

// MaxAppState bounds the app's own state that authorize takes and the
// callback's redirect gives back (RFC 6749 section 4.1.1): a library's is
// some 20 to 60 characters; the bound keeps the stored flow and the
// redirect's URL small.
const MaxAppState = 512

// appChallengeLen is the length of an S256 code_challenge: a SHA-256,
// base64url without padding (RFC 7636 section 4.2).
const appChallengeLen = 43

// Options configure a Service.
type Options struct {
	Logger    *slog.Logger
	Pool      *pgxpool.Pool
	Providers []config.OIDCProvider
	Auth      *auth.Service
	Sessions  *sessions.Store
	// HTTPClient talks to the providers; nil means a client with a 10 s
	// timeout.
	HTTPClient *http.Client
	// AllowedReturnURLs (OAUTH_ALLOWED_RETURN_URLS): once set, authorize
	// requires a return_to equal to one of them and the callback redirects
	// there with the hand-over code (or its refusal, once the flow is
	// known: refusalTo); unset, return_to is refused and the
	// callback answers {code} as JSON (development). With the list,
	// authorize also requires the app's code_challenge (S256), whose
	// code_verifier the hand-over exchange then needs.
	AllowedReturnURLs []string
	// Issuer (TOKEN_ISSUER) is named as iss beside the hand-over code in
	// the redirect to return_to (RFC 9207); "" names none.
	Issuer string
	// AuthorizePerMinute is how many sign-ins one client IP may start per
	// minute (a sliding minute, over every replica: ratelimit);
	// 0 means DefaultAuthorizePerMinute.
	AuthorizePerMinute int
	// MaxPendingStates caps the live rows of oauth_states; 0 means
	// DefaultMaxPendingStates.
	MaxPendingStates int
}

// Service serves the authorize and callback routes.
type Service struct {
	log       *slog.Logger
	pool      *pgxpool.Pool
	auth      *auth.Service
	sessions  *sessions.Store
	client    *http.Client
	providers map[string]*provider
	// signIns: what a linked identity must match to sign in (the unlink's
	// last-way-in check).
	signIns  signInProviders
	returnTo map[string]bool
	// loopback are the listed return_tos on a loopback IP literal, which
	// a native app meets on any port (loopbackReturnTo).
	loopback  []loopbackReturnTo
	issuer    string
	limiter   *ratelimit.Limiter
	limit     ratelimit.Limit
	maxStates int
	// fullLogs bounds the "oauth states full" warnings: while the table
	// is full every start is refused, and clients from many addresses
	// would otherwise each write one. One a second at most: the count
	// goes in the warning (Take), and one the timer writes is its
	// second's.
	fullLogs logging.Budget
}

// provider is one configured OIDC provider. Discovery runs on first use
// (and again after a failure), so coreapi starts while a provider is down.
type provider struct {
	cfg config.OIDCProvider
	// domains are the mail domains the provider is authoritative for
	// (cfg.EmailDomains as mail.DomainKey), anyDomain true for every one
	// (config.AnyEmailDomain): vouches.
	domains   map[string]bool
	anyDomain bool

	// flight runs one discovery at a time: while the provider is slow or
	// down, the requests that arrive meanwhile wait for that attempt and
	// share its outcome, instead of queueing for one client timeout each.
	flight singleflight.Group

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
	// issParam: the discovery document says every authorization response
	// names its issuer (RFC 9207's
	// authorization_response_iss_parameter_supported).
	issParam bool
}

func newProvider(cfg config.OIDCProvider) *provider {
	p := &provider{cfg: cfg, domains: make(map[string]bool, len(cfg.EmailDomains))}
	for _, d := range cfg.EmailDomains {
		if d == config.AnyEmailDomain {
			p.anyDomain = true
		} else {
			p.domains[mail.DomainKey(d)] = true
		}
	}
	return p
}

// vouches reports whether the provider vouches for email (mail.Canonical),
// which its ID token marks verified: only a provider authoritative for the
// address's domain does (OIDC_<NAME>_EMAIL_DOMAINS). Any other may have
// marked verified an address its user does not hold: a company's IdP
// whose admins mark any address verified, or Google, where anyone opens an
// account under any address. With domains listed, a token whose hd claim
// (Google's hosted domain of the account) names another domain, or is no
// string, does not vouch either: the account is not the domain's. With
// every domain (config.AnyEmailDomain) the operator trusts the provider's
// word for every address, knowingly, and hd is not looked at.
func (p *provider) vouches(email string, hd json.RawMessage) bool {
	if p.anyDomain {
		return true
	}
	domain := mail.AddressDomain(email)
	if domain == "" || !p.domains[domain] {
		return false
	}
	if len(hd) == 0 || string(hd) == "null" {
		return true
	}
	var hosted string
	return json.Unmarshal(hd, &hosted) == nil && mail.DomainKey(hosted) == domain
}

// checkIssuer applies RFC 9207 to an authorization response's iss: one
// that names an issuer must name this provider's, exactly, and a provider
// that says it always names it must have. Before the code goes to the
// token endpoint: a response another provider produced (a mix-up of two
// configured providers) is never exchanged here. An error response is
// checked too, before it is answered as this provider's refusal.
func (p *provider) checkIssuer(iss string) error {
	p.mu.Lock()
	required := p.issParam
	p.mu.Unlock()
	if iss == p.cfg.Issuer || (iss == "" && !required) {
		return nil
	}
	if iss == "" {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"the provider's answer does not name its issuer (iss), which its discovery document says it always does; start again")
	}
	return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
		"the provider's answer names another issuer (iss) than this provider's; start again")
}

// discovered returns the provider's OAuth2 config and ID token verifier,
// nil before a discovery succeeded.
func (p *provider) discovered() (*oauth2.Config, *oidc.IDTokenVerifier) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oauth, p.verifier
}

// New returns a Service for the configured providers.
func New(o Options) (*Service, error) {
	if o.Logger == nil || o.Pool == nil || o.Auth == nil || o.Sessions == nil {
		return nil, errors.New("oauth: Logger, Pool, Auth and Sessions are required")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	client := *o.HTTPClient // the caller's client stays as it was
	client.Transport = bodyLimit{base: client.Transport, max: MaxProviderResponse}
	if o.AuthorizePerMinute <= 0 {
		o.AuthorizePerMinute = DefaultAuthorizePerMinute
	}
	if o.MaxPendingStates <= 0 {
		o.MaxPendingStates = DefaultMaxPendingStates
	}
	s := &Service{log: o.Logger, pool: o.Pool, auth: o.Auth, sessions: o.Sessions, client: &client, fullLogs: logging.Budget{PerSecond: 1},
		providers: make(map[string]*provider, len(o.Providers)), returnTo: map[string]bool{}, issuer: o.Issuer,
		limiter: ratelimit.New(o.Pool), limit: ratelimit.Limit{N: o.AuthorizePerMinute, Window: time.Minute},
		maxStates: o.MaxPendingStates, signIns: newSignInProviders(o.Providers)}
	s.fullLogs.Report = func(dropped int64, _ slog.Level) { s.logFull(dropped) } // warnings only
	for _, u := range o.AllowedReturnURLs {
		s.returnTo[u] = true
		if l, ok := loopbackEntry(u); ok {
			s.loopback = append(s.loopback, l)
		}
	}
	for _, p := range o.Providers {
		s.providers[p.Name] = newProvider(p)
	}
	return s, nil
}

// bodyLimit is a transport whose response bodies end in an error after
// max bytes, whoever reads them.
type bodyLimit struct {
	base http.RoundTripper
	max  int64
}

// errTooLarge: a provider's answer went past MaxProviderResponse.
var errTooLarge = fmt.Errorf("provider response larger than %d bytes", MaxProviderResponse)

// errInsecureURL: a request to a provider over plain http to a host that
// is not a loopback one (an endpoint its discovery document names, or a
// redirect one of its answers makes).
var errInsecureURL = errors.New("provider URL is not https (http only on a loopback host)")

func (t bodyLimit) RoundTrip(r *http.Request) (*http.Response, error) {
	// Every request, each redirect's too (the client follows them through
	// this transport): the key set, the token endpoint (which gets the
	// client secret) and the discovery document are worth no more than
	// the network path they cross.
	if !config.HTTPSOrLoopback(r.URL) {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s", errInsecureURL, r.URL.Redacted())
	}
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.max}
	return resp, nil
}

// limitedBody reads at most left bytes, then fails with errTooLarge
// (rather than end early, which would look like a whole answer).
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells an answer of exactly the limit from a
		// longer one.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// discover returns the provider's OAuth2 config and ID token verifier.
func (s *Service) discover(p *provider) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	if oc, v := p.discovered(); oc != nil {
		return oc, v, nil
	}
	_, err, _ := p.flight.Do(p.cfg.Name, func() (any, error) {
		if oc, _ := p.discovered(); oc != nil { // a flight that just ended
			return nil, nil
		}
		// Not the request context: the provider keeps this context to fetch
		// its signing keys later.
		ctx := oidc.ClientContext(context.Background(), s.client)
		op, err := oidc.NewProvider(ctx, p.cfg.Issuer)
		if err != nil {
			return nil, fmt.Errorf("discover %s: %w", p.cfg.Name, err)
		}
		if err := secureEndpoints(op); err != nil {
			return nil, fmt.Errorf("discover %s: %w", p.cfg.Name, err)
		}
		var doc struct {
			// Only a JSON true: a provider that sends anything else is
			// taken not to promise the parameter.
			IssParam json.RawMessage `json:"authorization_response_iss_parameter_supported"`
		}
		if err := op.Claims(&doc); err != nil {
			return nil, fmt.Errorf("discover %s: discovery document: %w", p.cfg.Name, err)
		}
		scopes := p.cfg.Scopes
		if !slices.Contains(scopes, oidc.ScopeOpenID) {
			scopes = append([]string{oidc.ScopeOpenID}, scopes...)
		}
		oc := &oauth2.Config{
			ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret,
			Endpoint: op.Endpoint(), RedirectURL: p.cfg.RedirectURL, Scopes: scopes,
		}
		v := op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID})
		p.mu.Lock()
		p.oauth, p.verifier, p.issParam = oc, v, string(doc.IssParam) == "true"
		p.mu.Unlock()
		return nil, nil
	})
	if err != nil {
		return nil, nil, err
	}
	oc, v := p.discovered()
	return oc, v, nil
}

// discoverFor is discover for a request: a failure is logged with the
// request's id and answered 502 provider_unavailable.
func (s *Service) discoverFor(c *fiber.Ctx, p *provider) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	oc, v, err := s.discover(p)
	if err != nil {
		s.log.WarnContext(c.UserContext(), "oidc discovery", "request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name, "err", logging.Redact(err.Error()))
		return nil, nil, errDiscovery
	}
	return oc, v, nil
}

// secureEndpoints checks the endpoints a discovery document names, as
// the issuer was (config): https, or http on a loopback host. The key set
// decides which ID tokens verify, the token endpoint gets the client
// secret and the code, and the browser is sent to the authorization
// endpoint; over plain http, anyone on the path could answer in the
// provider's place.
func secureEndpoints(op *oidc.Provider) error {
	var doc struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := op.Claims(&doc); err != nil {
		return fmt.Errorf("discovery document: %w", err)
	}
	ep := op.Endpoint()
	for _, e := range []struct{ name, url string }{
		{"authorization_endpoint", ep.AuthURL}, {"token_endpoint", ep.TokenURL}, {"jwks_uri", doc.JWKS},
	} {
		u, err := url.Parse(e.url)
		if err != nil || u.Host == "" || !config.HTTPSOrLoopback(u) {
			return fmt.Errorf("%s %s: %w", e.name, clip.String(e.url, 200), errInsecureURL)
		}
	}
	return nil
}

// Register adds the OAuth routes (an httpapi.Options.Register hook).
func (s *Service) Register(rt httpapi.Routes) {
	rt.CloseAtShutdown(&s.fullLogs)
	// GET only: authorize stores a pending state (and counts against the
	// per-address and table limits), the callback consumes it and opens a
	// session; neither may happen for a HEAD that no browser follows.
	rt.Public.GetOnly("/auth/oauth/:provider/authorize", s.authorize)
	rt.Public.GetOnly("/auth/oauth/:provider/callback", s.callback)
	// A link's start, opened by the owner's browser: public, since a
	// navigation carries no bearer; the ticket stands for the start.
	rt.Public.GetOnly("/auth/oauth/:provider/link", s.openLink)
	// The caller's own links: API keys and service accounts are refused
	// (shared/accountroutes).
	rt.Protected.Get("/users/me/identities", s.listIdentities)
	rt.Protected.Post("/users/me/identities/:provider", s.startLink)
	rt.Protected.Post("/users/me/identities/:provider/confirm", s.confirmLink)
	rt.Protected.Delete("/users/me/identities/:provider", s.unlinkIdentity)
}

func (s *Service) lookup(c *fiber.Ctx) (*provider, error) {
	p, ok := s.providers[c.Params("provider")]
	if !ok {
		return nil, problem.New(fiber.StatusNotFound, problem.CodeUnknownProvider, "no such sign-in provider")
	}
	return p, nil
}

func random() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hashState(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

// linkBrowserHash is what a link's state stores of its binding cookie's
// value: another hash than a sign-in's (hashState), so that a link's
// state is never consumed as a sign-in's, here or by a release that knows
// no links.
func linkBrowserHash(browser string) []byte {
	h := sha256.Sum256([]byte("link:" + browser))
	return h[:]
}

// linkCodeHash is what a link's flow stores of its link code once the
// callback verified the provider's answer: in the state's place, under
// another prefix than a state's hash or a ticket's.
func linkCodeHash(code string) []byte {
	h := sha256.Sum256([]byte("link-code:" + code))
	return h[:]
}

// ticketHash is what a link's flow stores of its ticket until the ticket
// is opened: in the state's place (oauth_states.state_hash), under
// another prefix than a state's hash, so that no state is the ticket.
func ticketHash(ticket string) []byte {
	h := sha256.Sum256([]byte("link-ticket:" + ticket))
	return h[:]
}

// CookieName is the name of the cookie that binds state to the browser.
func CookieName(state string) string {
	return CookiePrefix + hex.EncodeToString(hashState(state)[:8])
}

// bindingCookie sets (or, with an empty value, clears) the binding cookie:
// __Host- (Secure, Path=/, no Domain: this host only), HttpOnly, and
// SameSite=Lax so that it comes back on the provider's top-level redirect
// but not on cross-site subrequests.
func bindingCookie(c *fiber.Ctx, state, value string) {
	maxAge := int(StateTTL / time.Second)
	if value == "" {
		maxAge = -1
	}
	c.Cookie(&fiber.Cookie{Name: CookieName(state), Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode})
}

// clearBindings expires every binding cookie of the request once there
// are MaxBindingCookies of them.
func clearBindings(c *fiber.Ctx) {
	var names []string
	for k := range c.Request().Header.Cookies() {
		if strings.HasPrefix(string(k), CookiePrefix) {
			names = append(names, string(k))
		}
	}
	if len(names) < MaxBindingCookies {
		return
	}
	for _, n := range names {
		c.Cookie(&fiber.Cookie{Name: n, Path: "/", MaxAge: -1, Secure: true, HTTPOnly: true,
			SameSite: fiber.CookieSameSiteLaxMode})
	}
}

var (
	errStateNotBound = problem.New(fiber.StatusBadRequest, problem.CodeStateNotBound,
		"this sign-in was not started in this browser (its cookie is missing); start again")
	errFull = problem.New(fiber.StatusServiceUnavailable, problem.CodeUnavailable,
		"too many sign-ins are in progress; retry in a minute")
)

// checkReturnTo validates a return_to against the allow-list: required
// and exactly one of the listed URLs once the list is set, refused when
// there is no list. Checked at the start and again at the callback.
func (s *Service) checkReturnTo(v string) error {
	switch {
	case len(s.returnTo) == 0 && v == "":
		return nil
	case len(s.returnTo) == 0:
		return problem.New(fiber.StatusBadRequest, problem.CodeReturnToNotAllowed,
			"return_to is not accepted: no OAUTH_ALLOWED_RETURN_URLS are configured")
	case v == "":
		return problem.New(fiber.StatusBadRequest, problem.CodeReturnToNotAllowed,
			"return_to is required: one of the configured OAUTH_ALLOWED_RETURN_URLS")
	case !s.returnTo[v] && !slices.ContainsFunc(s.loopback, func(l loopbackReturnTo) bool { return l.matches(v) }):
		return problem.New(fiber.StatusBadRequest, problem.CodeReturnToNotAllowed,
			"return_to is not one of the configured OAUTH_ALLOWED_RETURN_URLS")
	}
	return nil
}

// loopbackReturnTo is a listed return_to whose host is a loopback IP
// literal (127.0.0.1, [::1]): a native app receives the redirect on a
// port the system picks when it runs, so the listed URL is met by the
// same URL on any port (RFC 8252 section 7.3). Everything else is still
// compared byte for byte: scheme and literal (prefix, "http://127.0.0.1"),
// and path and query (rest). Never for the name localhost, which a hosts
// file or a resolver may point at another machine (section 8.3), nor for
// any other host.
type loopbackReturnTo struct{ prefix, rest string }

// loopbackEntry is the loopbackReturnTo of a listed URL, ok false when
// its host is not a loopback IP literal in its plain spelling.
func loopbackEntry(listed string) (loopbackReturnTo, bool) {
	u, err := url.Parse(listed)
	if err != nil || u.User != nil || u.Opaque != "" {
		return loopbackReturnTo{}, false
	}
	host := u.Hostname()
	addr, err := netip.ParseAddr(host)
	if err != nil || !addr.IsLoopback() || addr.String() != host || addr.Is4In6() {
		return loopbackReturnTo{}, false
	}
	if addr.Is6() {
		host = "[" + host + "]"
	}
	prefix := u.Scheme + "://" + host
	after, ok := strings.CutPrefix(listed, prefix)
	if !ok {
		return loopbackReturnTo{}, false
	}
	_, rest, ok := cutPort(after)
	if !ok {
		return loopbackReturnTo{}, false
	}
	return loopbackReturnTo{prefix: prefix, rest: rest}, true
}

// matches reports whether v is the listed URL on some port: the prefix,
// a port number or none, then the listed path and query exactly. Anything
// between the literal and the path that is no port number (userinfo as
// in "127.0.0.1:80@evil", a name going on as in "127.0.0.1.evil") is no
// path of the listed URL either.
func (l loopbackReturnTo) matches(v string) bool {
	after, ok := strings.CutPrefix(v, l.prefix)
	if !ok {
		return false
	}
	_, rest, ok := cutPort(after)
	return ok && rest == l.rest
}

// cutPort splits what follows a URL's host into its port ("" for none)
// and the rest, ok false for a ":" not followed by a port number from 1
// to 65535 in plain digits (no sign, no leading zero) and then the end,
// a "/" or a "?".
func cutPort(after string) (port, rest string, ok bool) {
	if !strings.HasPrefix(after, ":") {
		return "", after, true
	}
	i := 1
	for i < len(after) && after[i] >= '0' && after[i] <= '9' {
		i++
	}
	port, rest = after[1:i], after[i:]
	if port == "" || len(port) > 5 || port[0] == '0' || (rest != "" && rest[0] != '/' && rest[0] != '?') {
		return "", "", false
	}
	if n, err := strconv.Atoi(port); err != nil || n > 65535 {
		return "", "", false
	}
	return port, rest, true
}

// checkAppChallenge validates the app's PKCE parameters of authorize
// (RFC 7636 section 4.3): a challenge is a SHA-256 (base64url, 43
// characters) with code_challenge_method S256, named, since RFC 7636's
// default is plain, under which a challenge read from a URL would be the
// verifier. The challenge is required once OAUTH_ALLOWED_RETURN_URLS is
// set: the hand-over code then travels to the app through the browser,
// and only the verifier, which the app keeps, tells its own flow's code
// from one planted in the browser.
func (s *Service) checkAppChallenge(challenge, method string) error {
	switch {
	case challenge == "" && method != "":
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"code_challenge_method without a code_challenge")
	case challenge == "" && len(s.returnTo) > 0:
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"code_challenge is required (S256 of the app's code_verifier, which the hand-over exchange needs)")
	case challenge == "":
		return nil
	case method != "S256":
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"code_challenge_method must be S256")
	case len(challenge) != appChallengeLen || !base64URL(challenge):
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)")
	}
	return nil
}

// checkResponse refuses another flow than the one the sign-in is: the
// authorization code flow (response_type code, RFC 6749 section 4.1.1)
// answered in the query of the redirect to return_to (response_mode
// query, OAuth 2.0 Multiple Response Type Encoding Practices). A client
// that asked for tokens in the redirect (implicit, hybrid) or for the
// answer in a fragment or a form post would wait for one that never
// comes in the form it reads. Either left out is the supported one.
func checkResponse(responseType, responseMode string) error {
	if responseType != "" && responseType != "code" {
		return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedResponseType,
			"response_type must be code: only the authorization code flow is supported (no implicit or hybrid flow)")
	}
	if responseMode != "" && responseMode != "query" {
		return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedResponseMode,
			"response_mode must be query: the answer is given in the query of the redirect to return_to")
	}
	return nil
}

// checkPrompt validates authorize's prompt (OpenID Connect Core
// 3.1.2.1): "" for none, or space-separated values of login, consent and
// select_account, which are passed on to the provider, or none alone,
// which it reports (and which never reaches the provider, see
// loginRequired).
func checkPrompt(v string) (none bool, err error) {
	if v == "" {
		return false, nil
	}
	if v == "none" {
		return true, nil
	}
	for _, p := range strings.Split(v, " ") {
		if p != "login" && p != "consent" && p != "select_account" {
			pr := problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
				"prompt must be none alone, or space-separated values of login, consent and select_account")
			pr.Errors = []problem.FieldError{{Field: "prompt", Message: "none, or login, consent, select_account"}}
			return false, pr
		}
	}
	return false, nil
}

// loginRequired answers a start with prompt=none: coreapi keeps no
// browser session of its own, so every sign-in goes through the
// provider, which may show its pages, and the start cannot promise none
// (OpenID Connect Core 3.1.2.1). Passed on to the provider, its refusal
// would end at the callback's error page, not at the app. With a listed
// return_to (checked before) the answer is the OAuth error response there
// (3.1.2.6): error=login_required, iss and the app's state, which a
// library's silent sign-in reads and answers by starting one with
// interaction; without an allow-list, 400 login_required. Nothing is
// stored and no cookie set.
func (s *Service) loginRequired(c *fiber.Ctx, returnTo, appState string) error {
	const detail = "prompt=none cannot be honoured: the sign-in goes through the provider, which may ask the user; start it without prompt=none"
	if returnTo == "" {
		return problem.New(fiber.StatusBadRequest, problem.CodeLoginRequired, detail)
	}
	to, err := withParams(returnTo, []queryParam{{"error", problem.CodeLoginRequired}, {"iss", s.issuer}, {"state", appState}})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(to, fiber.StatusFound)
}

// checkAppState validates the app's own state (RFC 6749 section 4.1.1),
// "" for none: at most MaxAppState characters of printable ASCII, space
// included (Appendix A's VSCHAR), which the redirect gives back as sent.
func checkAppState(v string) error {
	if len(v) > MaxAppState || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		p := problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest,
			"state must be at most "+strconv.Itoa(MaxAppState)+" characters of printable ASCII (RFC 6749 Appendix A)")
		p.Errors = []problem.FieldError{{Field: "state", Message: "printable ASCII, at most " + strconv.Itoa(MaxAppState) + " characters"}}
		return p
	}
	return nil
}

// base64URL reports whether s holds only base64url characters.
func base64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

var errDiscovery = problem.New(fiber.StatusBadGateway, problem.CodeProviderUnavailable, "the sign-in provider cannot be reached")

// allowStart counts a sign-in started from the client's address against
// Options.AuthorizePerMinute, or answers 429 with Retry-After when the
// address has started its share. It is counted in PostgreSQL, as
// coreapi's other limits are: counted in each replica's memory, in fixed
// minutes, the limit was one per replica (N replicas let N times as many
// through) and twice itself at a minute's turn.
func (s *Service) allowStart(c *fiber.Ctx) error {
	key := ratelimit.Key("oauth-authorize", ratelimit.ClientKey(httpapi.ClientIP(c)))
	ok, wait, err := s.limiter.Allow(c.UserContext(), key, s.limit)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.TooMany(c, wait, "too many sign-ins started from this address")
	}
	return nil
}

func (s *Service) authorize(c *fiber.Ctx) error {
	p, err := s.lookup(c)
	if err != nil {
		return err
	}
	// Before any other work: a refused start costs one statement.
	if err := s.allowStart(c); err != nil {
		return err
	}
	// Each parameter at most once (RFC 6749 section 3.1): of two, which
	// one is meant would be a guess, and another reader may take the
	// other.
	var tid, returnTo, challenge, method, maxAgeParam, appState, responseType, responseMode, prompt string
	if err := httpapi.ReadForm(c.Context().QueryArgs(), []httpapi.FormField{
		{Name: "tenant_id", Dst: &tid}, {Name: "return_to", Dst: &returnTo},
		{Name: "code_challenge", Dst: &challenge}, {Name: "code_challenge_method", Dst: &method},
		{Name: "max_age", Dst: &maxAgeParam}, {Name: "state", Dst: &appState},
		{Name: "response_type", Dst: &responseType}, {Name: "response_mode", Dst: &responseMode},
		{Name: "prompt", Dst: &prompt}}); err != nil {
		return err
	}
	if err := checkResponse(responseType, responseMode); err != nil {
		return err
	}
	if err := checkAppState(appState); err != nil {
		return err
	}
	promptNone, err := checkPrompt(prompt)
	if err != nil {
		return err
	}
	maxAge, err := parseMaxAge(maxAgeParam)
	if err != nil {
		return err
	}
	var tenantID *string
	if tid != "" {
		if !ids.Valid(tid) {
			return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "tenant_id must be a UUID")
		}
		tenantID = &tid
	}
	if err := s.checkReturnTo(returnTo); err != nil {
		return err
	}
	if err := s.checkAppChallenge(challenge, method); err != nil {
		return err
	}
	if promptNone {
		return s.loginRequired(c, returnTo, appState)
	}
	oc, _, err := s.discoverFor(c, p)
	if err != nil {
		return err
	}
	to, err := s.beginFlow(c, p, oc, pendingState{TenantID: tenantID, ReturnTo: returnTo, AppChallenge: challenge, MaxAge: maxAge,
		AppState: appState}, prompt)
	if err != nil {
		return err
	}
	return c.Redirect(to, fiber.StatusFound)
}

// beginFlow stores a new flow through p (st as the caller filled it in,
// with a new state, nonce, PKCE verifier and browser binding), sets the
// flow's binding cookie and returns the provider's authorization URL.
// prompt ("" for none) is passed on to the provider.
func (s *Service) beginFlow(c *fiber.Ctx, p *provider, oc *oauth2.Config, st pendingState, prompt string) (string, error) {
	state, err := random()
	if err != nil {
		return "", err
	}
	nonce, err := random()
	if err != nil {
		return "", err
	}
	browser, err := random()
	if err != nil {
		return "", err
	}
	verifier := oauth2.GenerateVerifier()
	st.StateHash, st.Provider, st.Verifier, st.Nonce, st.RedirectURI = hashState(state), p.cfg.Name, verifier, nonce, oc.RedirectURL
	st.BrowserHash = hashState(browser)
	if err := s.save(c, st, StateTTL); err != nil {
		return "", err
	}
	return bindAndSend(c, oc, state, browser, verifier, nonce, st.MaxAge, prompt), nil
}

// save stores a new flow (saveState) that lives ttl, answering the
// store's refusals.
func (s *Service) save(c *fiber.Ctx, st pendingState, ttl time.Duration) error {
	err := saveState(c.UserContext(), s.pool, st, ttl, s.maxStates)
	switch {
	case errors.Is(err, errUnknownTenant):
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "unknown tenant_id")
	case errors.Is(err, errStatesFull):
		if ok, dropped := s.fullLogs.Take(time.Now()); ok {
			s.logFull(dropped)
		}
		c.Set(fiber.HeaderRetryAfter, "60")
		return errFull
	}
	return err
}

// bindAndSend sets a stored flow's binding cookie and returns the
// provider's authorization URL for it, asking prompt when not "".
func bindAndSend(c *fiber.Ctx, oc *oauth2.Config, state, browser, verifier, nonce string, maxAge *int, prompt string) string {
	clearBindings(c)
	bindingCookie(c, state, browser)
	c.Set(fiber.HeaderCacheControl, "no-store")
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)}
	if maxAge != nil {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.Itoa(*maxAge)))
	}
	if prompt != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", prompt))
	}
	return oc.AuthCodeURL(state, opts...)
}

// parseMaxAge reads authorize's max_age (OpenID Connect Core 3.1.2.1):
// the seconds since the provider last authenticated the user beyond which
// it must authenticate them again; nil when absent.
func parseMaxAge(v string) (*int, error) {
	if v == "" {
		return nil, nil
	}
	if len(v) > maxAgeDigits || strings.Trim(v, "0123456789") != "" {
		p := problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "max_age must be a number of seconds, 0 or more")
		p.Errors = []problem.FieldError{{Field: "max_age", Message: "digits only, at most 9"}}
		return nil, p
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("max_age %q: %w", v, err)
	}
	return &n, nil
}

// authenticatedAt is when the provider authenticated the user, from the
// ID token's auth_time (a JSON number of seconds; anything else counts as
// absent); nil when it does not say. With max_age asked (maxAge not nil)
// the provider must say (OpenID Connect Core 3.1.2.1), and no longer ago
// than max_age (with AuthTimeLeeway): otherwise it did not authenticate
// the user again as asked. A time ahead of now counts as now.
func authenticatedAt(raw json.RawMessage, maxAge *int, now time.Time) (*time.Time, error) {
	var at *time.Time
	if f, err := strconv.ParseFloat(string(raw), 64); err == nil && f > 0 && f < 1e11 {
		t := time.Unix(int64(f), 0)
		if t.After(now) {
			t = now
		}
		at = &t
	}
	switch {
	case maxAge == nil:
		return at, nil
	case at == nil:
		return nil, problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken,
			"the provider's ID token does not say when the user authenticated (auth_time), which a sign-in with max_age needs")
	case now.Sub(*at) > time.Duration(*maxAge)*time.Second+AuthTimeLeeway:
		return nil, problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken,
			"the provider did not authenticate the user again within max_age: its ID token's auth_time is older")
	}
	return at, nil
}

// issuedBefore checks an ID token's iat, which go-oidc reads but checks
// neither for presence nor against the clock: OpenID Connect Core 2
// requires it, and a token issued more than IssuedAtLeeway after now was
// not made for a sign-in under way. iat is the zero time when absent.
func issuedBefore(iat, now time.Time) error {
	switch {
	case iat.IsZero():
		return errors.New("does not say when it was issued (iat)")
	case iat.After(now.Add(IssuedAtLeeway)):
		return errors.New("says it was issued (iat) in the future")
	}
	return nil
}

type flow struct {
	Verifier    string
	Nonce       string
	RedirectURI string
	ReturnTo    string
	// AppChallenge is the app's S256 code_challenge ("" when none), which
	// the hand-over code carries on.
	AppChallenge string
	TenantID     *string
	// MaxAge is the max_age asked of the provider (nil: none).
	MaxAge *int
	// AppState is the app's own state, which the redirect to ReturnTo
	// gives back ("" when none).
	AppState string
	Live     bool
	// LinkUserID and LinkSessionID: the flow links the provider to this
	// account, for this session of it (nil: a sign-in).
	LinkUserID, LinkSessionID *string
}

var (
	errBadState     = problem.New(fiber.StatusBadRequest, problem.CodeInvalidState, "unknown or already used sign-in state; start again")
	errExpiredState = problem.New(fiber.StatusBadRequest, problem.CodeExpiredState, "the sign-in took too long; start again")
)

// consume deletes the state row and returns it (see consumeState).
func (s *Service) consume(ctx context.Context, providerName, state, browser string) (flow, error) {
	f, err := consumeState(ctx, s.pool, hashState(state), providerName, browser)
	switch {
	case errors.Is(err, errNoState):
		return flow{}, errBadState
	case errors.Is(err, errStateExpired):
		return flow{}, errExpiredState
	}
	return f, err
}

// callback ends a flow at the provider's redirect back (finishCallback).
// A refusal once the flow's state is spent and the provider's answer
// checked goes back to the app when the flow has a listed return_to
// (refusalTo); any other is answered here as problem+json.
func (s *Service) callback(c *fiber.Ctx) error {
	// Every answer of the callback is private, whatever it is: the
	// redirect to return_to carries the hand-over code, the JSON answer
	// the code itself, and the request's URL the provider's authorization
	// code and state. Set first: an error answer gets them too.
	httpapi.PrivateHeaders(c)
	var trusted *flow
	err := s.finishCallback(c, &trusted)
	if err == nil || trusted == nil {
		return err
	}
	to, ok := s.refusalTo(*trusted, err)
	if !ok {
		return err
	}
	return c.Redirect(to, fiber.StatusFound)
}

// finishCallback is the callback's work. It sets *trusted to the flow
// once the flow's state is spent and the provider's answer to it checked
// (RFC 9207's iss), so that a refusal from then on may be sent to the
// flow's return_to: before, no return_to is known, or it would come from
// a flow the answer may not be for (an unknown, expired or unbound state,
// another issuer's answer).
func (s *Service) finishCallback(c *fiber.Ctx, trusted **flow) error {
	p, err := s.lookup(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	// Each parameter at most once (RFC 6749 section 3.1), as at the
	// start: with two codes or states, which one is meant would be a guess.
	var state, perr, perrDesc, code, iss string
	if err := httpapi.ReadForm(c.Context().QueryArgs(), []httpapi.FormField{
		{Name: "state", Dst: &state}, {Name: "code", Dst: &code}, {Name: "iss", Dst: &iss},
		{Name: "error", Dst: &perr}, {Name: "error_description", Dst: &perrDesc}}); err != nil {
		return err
	}
	if state == "" || len(state) > 512 {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "state is required")
	}
	// Login CSRF and stolen callback URLs: the state counts only in the
	// browser that started the flow.
	browser := strings.Clone(c.Cookies(CookieName(state)))
	if browser == "" {
		return errStateNotBound
	}
	if perr != "" {
		// The provider ended the flow (user denied, ...): the state is
		// spent. One unknown, already spent or expired is answered as
		// for a response with a code: no sign-in was under way for the
		// provider to refuse.
		f, err := s.consume(ctx, p.cfg.Name, state, browser)
		if err != nil {
			return err
		}
		bindingCookie(c, state, "")
		// An error response is an authorization response too (RFC 9207
		// section 2): one of another issuer, or without the iss this
		// provider promises, is no refusal of this provider's, and its
		// error and description are not passed on as one. Whether the
		// provider promises iss is in its discovery document, which this
		// instance may not have read yet (another replica started the
		// sign-in, or this one restarted since): read first, as for a
		// response with a code.
		if _, _, err := s.discoverFor(c, p); err != nil {
			return err
		}
		if err := p.checkIssuer(iss); err != nil {
			return err
		}
		*trusted = &f
		return providerRefusal{code: perr, p: problem.New(fiber.StatusBadRequest, problem.CodeProviderError, refusalDetail(perr, perrDesc))}
	}
	if code == "" {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, "code is required")
	}
	f, err := s.consume(ctx, p.cfg.Name, state, browser)
	if err != nil {
		return err
	}
	bindingCookie(c, state, "") // spent: the browser may forget it
	// The return_to against this instance's list, now: one removed since
	// the start (on a restart, or another replica's newer list) gets no
	// code, and none is exchanged for it.
	if err := s.checkReturnTo(f.ReturnTo); err != nil {
		return err
	}
	oc, verifier, err := s.discoverFor(c, p)
	if err != nil {
		return err
	}
	if err := p.checkIssuer(iss); err != nil {
		return err
	}
	*trusted = &f
	octx := context.WithValue(oidc.ClientContext(ctx, s.client), oauth2.HTTPClient, s.client)
	tok, err := oc.Exchange(octx, code, oauth2.VerifierOption(f.Verifier), oauth2.SetAuthURLParam("redirect_uri", f.RedirectURI))
	if err != nil {
		if codeRefused(err) {
			return problem.New(fiber.StatusBadRequest, problem.CodeInvalidCode, "the provider rejected the authorization code")
		}
		s.log.WarnContext(ctx, "oidc code exchange", append([]any{"request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name},
			exchangeFailure(err, p.cfg.ClientID, p.cfg.ClientSecret, code, f.Verifier)...)...)
		return problem.New(fiber.StatusBadGateway, problem.CodeProviderError, "the code exchange with the provider failed")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider returned no ID token")
	}
	idt, err := verifier.Verify(octx, raw)
	if err != nil {
		s.log.WarnContext(ctx, "oidc id token", "request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name, "err", logging.Redact(err.Error()))
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider's ID token did not verify")
	}
	if err := claimNamesExact(idt); err != nil {
		s.log.WarnContext(ctx, "oidc id token", "request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name, "err", err.Error())
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider's ID token names a claim twice, or in another letter case")
	}
	if err := issuedBefore(idt.IssuedAt, time.Now()); err != nil {
		s.log.WarnContext(ctx, "oidc id token", "request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name, "err", err.Error())
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider's ID token "+err.Error())
	}
	if idt.Nonce != f.Nonce {
		return problem.New(fiber.StatusBadRequest, problem.CodeNonceMismatch, "the ID token was not issued for this sign-in")
	}
	// An identity is (provider, subject): a token without a subject
	// identifies nobody, and "" linked once would let every later
	// subject-less token into that account. A control character is no
	// part of an identifier (OpenID Connect Core 2: at most 255 ASCII
	// characters), and NUL cannot be stored at all.
	if idt.Subject == "" || len(idt.Subject) > maxSubject || strings.ContainsFunc(idt.Subject, unicode.IsControl) {
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider's ID token names no valid subject")
	}
	var cl struct {
		Email string `json:"email"`
		// Only a JSON true vouches for the address. Some providers send
		// strings ("true", "false"): not a verification, but no reason to
		// refuse a token whose identity is already linked.
		EmailVerified json.RawMessage `json:"email_verified"`
		Name          string          `json:"name"`
		AZP           string          `json:"azp"`
		// When the provider authenticated the user: a JSON number; the
		// session's auth_time, not the time of this callback.
		AuthTime json.RawMessage `json:"auth_time"`
		// Google's hosted domain of the account (vouches).
		HD json.RawMessage `json:"hd"`
	}
	if err := idt.Claims(&cl); err != nil {
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the ID token's claims are malformed")
	}
	if !issuedTo(idt.Audience, cl.AZP, p.cfg.ClientID) {
		s.log.WarnContext(ctx, "oidc id token for another client", "request_id", httpapi.RequestIDOf(c), "provider", p.cfg.Name,
			"aud", idt.Audience, "azp", clip.String(cl.AZP, 100))
		return problem.New(fiber.StatusBadGateway, problem.CodeInvalidIDToken, "the provider's ID token was issued to another client")
	}
	authTime, err := authenticatedAt(cl.AuthTime, f.MaxAge, time.Now())
	if err != nil {
		return err
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	if f.LinkUserID != nil {
		// A link its owner asked for: nothing is linked here, for this
		// browser may not be the owner's (whoever opened the start's URL
		// first). The verified identity waits on the flow for the session
		// that started it, which confirms it with the code this browser
		// takes to return_to (confirmLink); no session is opened.
		return s.handLinkCode(c, p, f, verifiedLink{Issuer: p.cfg.Issuer, Subject: idt.Subject, Email: linkEmail(cl.Email)})
	}
	ua := strings.Clone(c.Get(fiber.HeaderUserAgent))
	ip := httpapi.ClientIP(c) // the signed client IP, never X-Forwarded-For
	// The provider's issuer, not the token's spelling of it: go-oidc also
	// takes Google's without its scheme, which Google sends at times.
	email := mail.Canonical(cl.Email)
	verified := string(cl.EmailVerified) == "true"
	in := signIn{Provider: p.cfg.Name, Issuer: p.cfg.Issuer, Subject: idt.Subject, Email: email, LookAlike: nfcReplaces(cl.Email) || lowerRenamesDomain(cl.Email),
		Verified: verified, Vouched: verified && p.vouches(email, cl.HD), Name: cl.Name,
		TenantID: f.TenantID, AuthTime: authTime, UserAgent: ua, IP: ip, RequestID: rid}
	g, err := s.signIn(ctx, in)
	if err != nil {
		return err
	}
	// Tokens never go into a page or a URL: the browser carries a
	// one-time code to the app, which exchanges it at the token endpoint.
	handover, err := s.auth.CreateHandover(ctx, g.UserID, g.SessionID, f.AppChallenge, f.ReturnTo, f.TenantID != nil)
	if err != nil {
		return err
	}
	if f.ReturnTo == "" { // no allow-list (development)
		return c.JSON(Handover{Code: handover, State: f.AppState})
	}
	to, err := withCode(f.ReturnTo, handover, s.issuer, f.AppState)
	if err != nil {
		return err
	}
	return c.Redirect(to, fiber.StatusFound)
}

// providerRefusal is the provider's error response (its error, code) as
// the callback answers it (p, 400 provider_error).
type providerRefusal struct {
	code string
	p    *problem.Problem
}

func (r providerRefusal) Error() string { return r.p.Error() }
func (r providerRefusal) Unwrap() error { return r.p }

// appErrors are the provider's error codes that are passed on to the app
// as they are: RFC 6749 section 4.1.2.1's that concern the user or the
// provider's state, and OpenID Connect Core 3.1.2.6's that an app's
// library acts on (login_required: start again with interaction). The
// others (invalid_request, unauthorized_client, invalid_scope,
// unsupported_response_type, ...) are about coreapi's request to the
// provider, which the app did not make, and any code RFC 6749 does not
// define means nothing to the app: server_error.
func appError(code string) bool {
	switch code {
	case "access_denied", "server_error", "temporarily_unavailable",
		"interaction_required", "login_required", "account_selection_required", "consent_required":
		return true
	}
	return false
}

// refusalTo is the OAuth error response (RFC 6749 section 4.1.2.1) that
// sends a callback's refusal err of flow f back to the app: f's return_to
// (when it has one still listed) with error, error_code (coreapi's
// problem code), error_description (the problem's detail, when it holds
// only the characters RFC 6749 allows), iss and the app's state, as the
// hand-over code goes (withCode). error is the provider's own for its
// refusal when appErrors has it (server_error otherwise), and for
// coreapi's refusals access_denied, or server_error for a 5xx. ok is
// false without a return_to (development: problem+json), and for an
// error that is no problem (a failure of coreapi's, which the error
// handler logs and answers 500 or 503).
func (s *Service) refusalTo(f flow, err error) (to string, ok bool) {
	var pr *problem.Problem
	if f.ReturnTo == "" || s.checkReturnTo(f.ReturnTo) != nil || !errors.As(err, &pr) {
		return "", false
	}
	code := "access_denied"
	if pr.Status >= 500 {
		code = "server_error"
	}
	var rf providerRefusal
	if errors.As(err, &rf) {
		code = "server_error"
		if appError(rf.code) {
			code = rf.code
		}
	}
	desc := pr.Detail
	if !errorText(desc) {
		desc = ""
	}
	to, err = withParams(f.ReturnTo, []queryParam{{"error", code}, {"error_code", pr.Code}, {"error_description", desc},
		{"iss", s.issuer}, {"state", f.AppState}})
	return to, err == nil
}

// refusalDetail is the detail of a provider's error response: its error
// and error_description, each only when it holds the characters RFC 6749
// (section 4.1.2.1) allows it, so that no line break, control character
// or bidirectional override of the provider's choosing reaches a page or
// a log that prints the detail.
func refusalDetail(code, description string) string {
	if !errorText(code) {
		return "the provider refused the sign-in (its error code has characters RFC 6749 does not allow, and is not shown)"
	}
	detail := "the provider refused the sign-in: " + clip.String(code, 100)
	if description != "" && errorText(description) {
		detail += " (" + clip.String(description, 200) + ")"
	}
	return detail
}

// errorText reports whether s holds only the characters RFC 6749 allows
// in error and error_description: printable ASCII but '"' and '\'.
func errorText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// withCode is returnTo (an allow-listed URL) with the hand-over code added
// to its query, the app's own state when it gave one (RFC 6749 section
// 4.1.2: its library ties the answer to its request by it, and refuses
// one without it), and the issuer as iss when there is one (RFC 9207: an app
// that signs in through several authorization servers at one return_to
// tells this one's answer from another's, and never sends this code and
// its verifier to another's token endpoint: mix-up). The app's own
// parameters stay as the operator listed them, byte for byte: decoded and
// encoded again, a pair with ";" would be dropped (Go's query parser
// refuses it) and escapes respelled. A code or iss parameter of the listed
// URL, between "&" or ";", is left out, and a state one when the app's
// state is added, so the app reads only these.
func withCode(returnTo, code, issuer, state string) (string, error) {
	return withParams(returnTo, []queryParam{{"code", code}, {"iss", issuer}, {"state", state}})
}

// queryParam is a parameter withParams adds; one with an empty value is
// left out.
type queryParam struct{ name, value string }

// withParams is returnTo with params added to its query, as withCode
// says: the listed URL's own parameters as written, but for a code or an
// iss, and any of the name of a parameter added.
func withParams(returnTo string, params []queryParam) (string, error) {
	u, err := url.Parse(returnTo)
	if err != nil {
		return "", fmt.Errorf("return_to: %w", err)
	}
	var kept []string
	for _, pair := range strings.Split(u.RawQuery, "&") {
		var parts []string
		for _, part := range strings.Split(pair, ";") {
			name, _, _ := strings.Cut(part, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if part != "" && name != "code" && name != "iss" && !slices.ContainsFunc(params, func(p queryParam) bool {
				return p.value != "" && p.name == name
			}) {
				parts = append(parts, part)
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, ";"))
		}
	}
	for _, p := range params {
		if p.value != "" {
			kept = append(kept, p.name+"="+url.QueryEscape(p.value))
		}
	}
	u.RawQuery = strings.Join(kept, "&")
	return u.String(), nil
}

// codeRefused reports whether the provider refused the code exchange for
// the code itself (RFC 6749 section 5.2: invalid_grant, the code is
// expired, used or another client's; invalid_request, it is malformed):
// the browser brought a bad code. Any other refusal (invalid_client,
// unauthorized_client: this service's client id or secret is wrong or not
// allowed the grant; a 4xx without an error code) is the service's setup,
// which no new sign-in mends and which the operator must hear of.
func codeRefused(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil || re.Response.StatusCode >= 500 {
		return false
	}
	return re.ErrorCode == "invalid_grant" || re.ErrorCode == "invalid_request"
}

// maxExchangeError bounds what the "oidc code exchange" warning says of
// the provider's answer: the oauth2 library's error holds the answer's
// whole body, whose size is the provider's (or whatever answers at its
// token endpoint) to choose.
const maxExchangeError = 512

// exchangeFailure is what the "oidc code exchange" warning logs of err:
// the provider's status and its error code and description, or, when its
// answer named no error, the start of its body; otherwise err's text. The
// client secret, the code and the PKCE verifier are taken out first, in
// every form the request carried them (a provider may quote the request
// it refuses), and the text is then cut to maxExchangeError bytes.
func exchangeFailure(err error, clientID, clientSecret, code, verifier string) []any {
	msg := err.Error()
	var attrs []any
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response != nil {
			attrs = append(attrs, "status", re.Response.StatusCode)
		}
		switch {
		case re.ErrorCode == "":
			msg = string(re.Body)
		case re.ErrorDescription != "":
			msg = re.ErrorCode + ": " + re.ErrorDescription
		default:
			msg = re.ErrorCode
		}
	}
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID) + ":" + url.QueryEscape(clientSecret)))
	for _, secret := range []string{basic, clientSecret, url.QueryEscape(clientSecret), code, url.QueryEscape(code), verifier} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "[redacted]")
		}
	}
	if len(msg) > maxExchangeError {
		msg = clip.Text(msg, maxExchangeError) + "..."
	}
	return append(attrs, "err", msg)
}

// issuedTo reports whether an ID token whose audience the verifier found
// to include clientID was issued to that client (OpenID Connect Core
// 3.1.3.7, steps 3 to 5, which go-oidc leaves to its caller): an
// authorized party (azp), when named, must be this client, and a token
// with several audiences must name it, for another audience's client may
// have asked for the token.
func issuedTo(aud []string, azp, clientID string) bool {
	if azp != "" {
		return azp == clientID
	}
	return len(aud) == 1
}

// idTokenClaims are the names of the ID token claims read at the
// callback: go-oidc's (its idToken type) and the callback's own.
func idTokenClaims() []string {
	return []string{"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "_claim_names", "_claim_sources",
		"email", "email_verified", "name", "azp", "auth_time", "hd"}
}

// claimNamesExact refuses an ID token whose claims name a member twice,
// or one of idTokenClaims in another letter case (jwtclaims.
// CheckMemberNames). encoding/json, which go-oidc and the callback read
// the claims with, matches "Email_Verified" or "SUB" (and "ſub") to the
// claim and lets the last of two members of one name win, where JSON and
// JWT compare names exactly (RFC 7519 sections 4 and 7.3): a claim of
// another name, such as one a provider maps from a profile attribute,
// would stand for the address's verification or the subject.
func claimNamesExact(idt *oidc.IDToken) error {
	var raw json.RawMessage
	if err := idt.Claims(&raw); err != nil {
		return fmt.Errorf("id token claims: %w", err)
	}
	if err := jwtclaims.CheckMemberNames(raw, idTokenClaims()); err != nil {
		return fmt.Errorf("id token claims: %w", err)
	}
	return nil
}

// Handover is the callback's JSON answer when no return_to is configured.
type Handover struct {
	Code string `json:"code"`
	// State is the app's own state given to authorize, when it gave one.
	State string `json:"state,omitempty"`
}

var errProviderAddress = func() *problem.Problem {
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation,
		"the provider's email address is not one this service accepts; this account cannot be created or linked")
	p.Errors = []problem.FieldError{{Field: "email", Message: "not one plain address, under the reserved .invalid domain, or a look-alike of another address (a compatibility character such as a full-width letter, or letters of mixed scripts)"}}
	return p
}()

type signIn struct {
	Provider, Subject, Name string
	// Issuer is the provider's issuer, which the verifier found the ID
	// token's iss to name.
	Issuer string
	// Email is the provider's address in mail.Canonical form (NFC).
	Email string
	// LookAlike: NFC replaced a character of the provider's address
	// outright (nfcReplaces), or its domain names another one in lower case
	// (lowerRenamesDomain), so Email is not the address it vouched for.
	LookAlike bool
	// Verified: the ID token marks the address verified (a JSON true).
	Verified bool
	// Vouched: Verified, by a provider authoritative for the address's
	// domain (provider.vouches). Only such an address links to an
	// existing account by its address, or makes a new account verified.
	Vouched  bool
	TenantID *string
	// AuthTime is when the provider authenticated the user (nil: it did
	// not say, and the sign-in counts as now).
	AuthTime                 *time.Time
	UserAgent, IP, RequestID string
}

// signIn finds or creates the user of a verified provider identity, picks
// the tenant and opens a session, in one transaction.
func (s *Service) signIn(ctx context.Context, in signIn) (auth.Grant, error) {
	var g auth.Grant
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		g.UserID, err = identityUser(ctx, tx, in.Provider, in.Issuer, in.Subject)
		if errors.Is(err, errOtherIssuer) {
			// The provider now names another issuer: this subject is
			// another issuer's user, whoever had it under the old one.
			return problem.New(fiber.StatusConflict, problem.CodeConflict,
				"this provider's account was linked through another issuer than the provider's current one; it cannot sign in until an operator removes the old link")
		}
		if errors.Is(err, errNoRow) {
			if in.Email == "" || !in.Verified {
				return problem.New(fiber.StatusForbidden, problem.CodeEmailNotVerified,
					"the provider did not vouch for an email address; this account cannot be created or linked")
			}
			if in.LookAlike {
				// KELVIN SIGN is not "K": the provider vouched for another
				// mailbox than the NFC form, which must neither enter that
				// form's account nor get a verified account of it.
				return problem.New(fiber.StatusConflict, problem.CodeConflict,
					"the provider's address has a character that Unicode normalization replaces (such as KELVIN SIGN for K); this account cannot be created or linked")
			}
			if !mail.ValidNewAddress(in.Email) {
				// The check every other address of an account passes: one
				// plain address, never under .invalid (service accounts'),
				// no look-alike of another. Refused, not taken unverified:
				// an account made with it would be the look-alike an
				// address a person gives cannot make. An account stored
				// with such an address before links the provider from the
				// account (POST /users/me/identities/{provider}).
				return errProviderAddress
			}
			var verified, adminPassword bool
			g.UserID, verified, adminPassword, err = userByEmail(ctx, tx, in.Email)
			if errors.Is(err, errOtherAddress) {
				// Not the provider's address: never enter that account, and
				// no second account can take an address lower() confuses.
				return problem.New(fiber.StatusConflict, problem.CodeConflict,
					"an account exists with an address that differs from the provider's in more than letter case; this account cannot be created or linked")
			}
			if err == nil && !in.Vouched {
				// The provider is not authoritative for the address's
				// domain: its word is not the mailbox's. Never enter the
				// account by it; its owner links the provider from the
				// account (POST /users/me/identities/{provider}).
				return problem.New(fiber.StatusConflict, problem.CodeProviderNotAuthoritative,
					"an account with this email address exists, and this sign-in provider does not vouch for addresses at its domain; sign in to it as before, and link the provider from the account")
			}
			if err == nil && !verified {
				// Whoever created that account never proved the address: it
				// may not be the provider's user. Never enter it.
				return problem.New(fiber.StatusConflict, problem.CodeVerifyBeforeLinking,
					"an account with this email address exists but its address is not verified; verify it (or reset its password) and sign in again")
			}
			if err == nil && adminPassword {
				// A tenant admin created the account with a password of
				// their choosing (POST /users): linked, the owner would
				// sign in through the provider while the admin kept
				// password access to the account, in every tenant it
				// joins. Its owner resets the password first (a change
				// proves only the current password, which the admin knows).
				return problem.New(fiber.StatusConflict, problem.CodeAdminPasswordBeforeLinking,
					"an account with this email address has a password that an administrator set; reset it (forgot password) and sign in again")
			}
			if err == nil {
				// The owner removed this provider's link: whoever holds an
				// account there with the address is who it was removed for.
				unlinked, err := providerUnlinked(ctx, tx, g.UserID, in.Provider)
				if err != nil {
					return err
				}
				if unlinked {
					return problem.New(fiber.StatusConflict, problem.CodeConflict,
						"the owner of the account with this email address removed this provider's link; it is not linked again by address: sign in to it as before")
				}
			}
			if err == nil {
				mfa, err := hasSecondFactor(ctx, tx, g.UserID)
				if err != nil {
					return err
				}
				if mfa {
					// The provider's word for the address is one factor,
					// and not the account's: linked, it would stand for
					// the password of an account whose owner asked for
					// two, and let whoever holds the provider's account
					// ask for the second (and spend its attempts).
					return problem.New(fiber.StatusConflict, problem.CodeMFABeforeLinking,
						"an account with this email address has a second factor, and no sign-in provider is linked to it by its address; sign in to it as before")
				}
			}
			// linked: a concurrent sign-in of this same subject linked it
			// to the account while this one was checking.
			linked := false
			if err == nil {
				var other bool
				other, linked, err = linkedToIssuer(ctx, tx, g.UserID, in.Provider, in.Issuer, in.Subject)
				if err != nil {
					return err
				}
				if other {
					// The account's holder at this provider is the subject
					// it is linked to: another one with its address is
					// someone the provider gave the address to since (a
					// mailbox recycled, an account made again).
					return problem.New(fiber.StatusConflict, problem.CodeOtherSubjectLinked,
						"an account with this email address is linked to another account of this provider; sign in with that one (or as before)")
				}
			}
			existing := err == nil
			if errors.Is(err, errNoRow) {
				if g.UserID, err = s.createAccount(ctx, tx, in); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			if !linked {
				if err := linkIdentity(ctx, tx, g.UserID, in.Provider, in.Issuer, in.Subject, in.Email); err != nil {
					return err
				}
			}
			if existing && !linked {
				// A new way into an existing account, as a password
				// change is: its tenants' audit logs say so (not the
				// provider's address: see identityLinkedData).
				if err := audit.WriteForUser(ctx, tx, g.UserID, audit.Event{ActorUserID: g.UserID,
					Action: audit.ActionUserIdentityLinked, TargetType: audit.TargetUser, TargetID: g.UserID, RequestID: in.RequestID,
					Data: identityLinkedData(in.Provider, in.Subject, "")}); err != nil {
					return err
				}
				// And its owner is told, at the proven address: whoever
				// holds an account at the provider with that address (a
				// mailbox its provider gave out again, an administrator of
				// the provider's domain) has just gained a way in.
				if err := auth.NoticeOwner(ctx, tx, g.UserID, mail.KindIdentityLinked,
					mail.Data{At: time.Now(), Provider: in.Provider}); err != nil {
					return err
				}
			}
		} else if err != nil {
			return err
		}
		// The provider vouched for the user: no password was given here,
		// and the user authenticated when the provider says, which may be
		// long before this sign-in (the provider's own session).
		amr := []string{auth.AMRFederated}
		var issued sessions.Issued
		for {
			var (
				tid    *string
				status string
			)
			tid, status, g.TokenVersion, err = signInTenant(ctx, tx, g.UserID, in.TenantID)
			if errors.Is(err, errNoRow) { // deleted since identityUser found it
				return errDeletedMeanwhile
			}
			if err != nil {
				return err
			}
			if status != identity.StatusActive {
				return errAccountDisabled
			}
			if tid == nil {
				return noMembership(in.TenantID)
			}
			g.TenantID = *tid
			if in.AuthTime != nil {
				issued, err = s.sessions.CreateAuthenticatedAt(ctx, tx, g.UserID, g.TenantID, in.UserAgent, in.IP, amr, *in.AuthTime)
			} else {
				issued, err = s.sessions.CreateWithAMR(ctx, tx, g.UserID, g.TenantID, in.UserAgent, in.IP, amr)
			}
			if errors.Is(err, sessions.ErrAccountDisabled) { // disabled, or deleted, since signInTenant
				return goneOr(ctx, tx, g.UserID, errAccountDisabled)
			}
			if !errors.Is(err, sessions.ErrNoMembership) {
				break
			}
			// Removed or disabled in the tenant, or the tenant suspended,
			// since signInTenant. A sign-in naming none picks again, as
			// the password grant does: the statement sees the change that
			// committed, so it lands in the user's next active tenant, as
			// a sign-in after the change does, or is answered as that one
			// is.
			if in.TenantID != nil {
				return goneOr(ctx, tx, g.UserID, noMembership(in.TenantID))
			}
		}
		if err != nil {
			return err
		}
		g.SessionID, g.RefreshToken = issued.SessionID, issued.RefreshToken
		return nil
	})
	var pe *pgconn.PgError
	if (errors.As(err, &pe) && pe.Code == "23505") || errors.Is(err, users.ErrEmailTaken) {
		// A concurrent first sign-in of the same identity or email won.
		return auth.Grant{}, problem.New(fiber.StatusConflict, problem.CodeConflict, "a concurrent sign-in created this account; try again")
	}
	if err != nil {
		return auth.Grant{}, err
	}
	return g, nil
}

// errAccountDisabled answers a sign-in of a disabled account, as the
// password grant does.
var errAccountDisabled = problem.New(fiber.StatusForbidden, problem.CodeUserDisabled, "this account is disabled")

// errDeletedMeanwhile answers a sign-in through an identity linked to an
// account that was deleted (users.DeleteAccount) after the sign-in found
// the identity and before its session was opened: nothing is opened, and
// no account is created in its place (a sign-in started after the
// deletion creates one, as for any address without an account).
var errDeletedMeanwhile = problem.New(fiber.StatusConflict, problem.CodeConflict,
	"the account was deleted while this sign-in was finishing; no session was opened")

// goneOr is the answer to a sign-in of userID whose session could not be
// opened: errDeletedMeanwhile when the account no longer exists (read by a
// statement of its own in tx, which sees a deletion committed since the
// transaction began), else refusal. A deleted account is neither disabled
// nor a former member.
func goneOr(ctx context.Context, tx pgx.Tx, userID string, refusal error) error {
	const q = `SELECT NOT EXISTS (SELECT 1 FROM users WHERE id = $1)`
	var gone bool
	if err := tx.QueryRow(ctx, q, userID).Scan(&gone); err != nil {
		return fmt.Errorf("look for the account: %w", err)
	}
	if gone {
		return errDeletedMeanwhile
	}
	return refusal
}

// noMembership answers a sign-in of an active account that finds no
// active membership in an active tenant, as the password grant does: of
// the tenant it requested (403 forbidden), or of any when it requested
// none (403 no_membership).
func noMembership(tenantID *string) error {
	if tenantID == nil {
		return problem.New(fiber.StatusForbidden, problem.CodeNoMembership, "this account has no active membership in any tenant")
	}
	return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "no active membership in tenant "+*tenantID)
}

// createAccount creates a user (without a password) and a personal tenant
// it owns, like a signup.
func (s *Service) createAccount(ctx context.Context, tx pgx.Tx, in signIn) (string, error) {
	name := clip.String(strings.TrimSpace(httpapi.CleanText(in.Name)), 200)
	if !httpapi.Visible(name) { // only zero-width characters: as good as none
		name = ""
	}
	tenantName := name
	if tenantName == "" {
		tenantName = in.Email
	}
	// Only provider-verified addresses get here; the account starts
	// verified only when the provider is authoritative for the address's
	// domain. Otherwise it waits for a mailed link, and a password reset
	// by the mailbox's owner ends what this sign-in's holder left in it,
	// its identity included (lifecycle's clearUnproven).
	u, _, err := users.InsertWithTenant(ctx, tx,
		users.NewUser{Email: clip.String(in.Email, mail.MaxStoredAddress), DisplayName: name, Verified: in.Vouched},
		clip.String(tenantName, 200), "oauth:"+in.Provider, in.RequestID)
	return u.ID, err
}

// Sweep deletes expired states and expired hand-over codes.
func (s *Service) Sweep(ctx context.Context) (int64, error) {
	states, err := sweepStates(ctx, s.pool)
	if err != nil {
		return 0, err
	}
	n, err := s.auth.SweepHandovers(ctx)
	return states + n, err
}

// RunSweeper sweeps expired states every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, every time.Duration) error {
	return sweep.Every(ctx, every, s.log, slog.LevelDebug, sweep.Task{Name: "oauth states", Run: s.Sweep})
}

// logFull writes the "oauth states full" warning, with the count of those
// fullLogs left out since the last: for a start let through, or, when no
// later start is refused, about a second after the last one left out
// (fullLogs.Report), so the count is not held back for ever.
func (s *Service) logFull(dropped int64) {
	s.log.Warn("oauth states full", "max", s.maxStates, "refused_since_last_line", dropped)
}
