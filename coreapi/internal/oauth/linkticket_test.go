package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// bindingCookies are the binding cookies an answer sets.
func bindingCookies(r apitest.Response) []*http.Cookie {
	var out []*http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if strings.HasPrefix(c.Name, oauth.CookiePrefix) {
			out = append(out, c)
		}
	}
	return out
}

// TestLinkStartsThroughATicket: an app on another site than the API
// starts a link with fetch, whose answer's cookies the browser drops (a
// third-party cookie), so the start sets none: it answers a one-time
// coreapi URL (GET /auth/oauth/{provider}/link?ticket=…, beside the
// provider's callback on the same host), which the browser opens as a
// top-level navigation, without a bearer. That sets the binding cookie
// first-party and redirects to the provider. The ticket is stored only as
// a hash, lives 60 seconds, and works once: whoever opens it after the
// first browser gets no flow and no cookie, and the link finishes only
// in the browser that opened it first. HEAD spends nothing.
func TestLinkStartsThroughATicket(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "ticket@example.com")
	x.provide("ticket-subject", "", false)

	post := func() *url.URL {
		t.Helper()
		r := x.Send(t, me, http.MethodPost, linkPath, nil)
		apitest.WantStatus(t, r, http.StatusOK)
		if cs := bindingCookies(r); len(cs) != 0 {
			t.Errorf("the start set the binding cookie %s, which a browser drops from a cross-site fetch's answer", cs[0].Name)
		}
		var b struct {
			AuthorizeURL string `json:"authorize_url"`
		}
		r.JSON(t, &b)
		u, err := url.Parse(b.AuthorizeURL)
		const want = "http://localhost:8080/api/v1/auth/oauth/fake/link"
		if err != nil || u.Scheme+"://"+u.Host+u.Path != want || len(u.Query()) != 1 || len(u.Query().Get("ticket")) != 43 {
			t.Fatalf("authorize_url = %q, want %s?ticket=<one-time ticket>", b.AuthorizeURL, want)
		}
		ticket := u.Query().Get("ticket")
		if n := x.count(t, `SELECT count(*) FROM oauth_states s WHERE strpos(s::text, $1) > 0`, ticket); n != 0 {
			t.Errorf("a state row holds the ticket as it is")
		}
		return u
	}
	open := func(method string, u *url.URL) apitest.Response {
		t.Helper()
		return x.Do(t, apitest.Request{Method: method, Path: u.RequestURI()})
	}

	u := post()
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE link_user_id = $1 AND expires_at <= now() + interval '60 seconds'`, me.UserID); n != 1 {
		t.Errorf("%d link flows of the owner whose ticket lives at most 60 s, want 1", n)
	}
	head := x.Do(t, apitest.Request{Method: http.MethodHead, Path: u.RequestURI(), Undocumented: true})
	if head.Status != http.StatusMethodNotAllowed || head.Header.Get("Allow") != http.MethodGet || len(bindingCookies(head)) != 0 {
		t.Errorf("HEAD of the ticket: %d Allow=%q, want 405 with Allow: GET and no cookie", head.Status, head.Header.Get("Allow"))
	}
	nav := open(http.MethodGet, u)
	apitest.WantStatus(t, nav, http.StatusFound)
	for h, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"} {
		if got := nav.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	loc, err := url.Parse(nav.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), x.idp.IssuerURL()+"/authorize?") {
		t.Fatalf("Location = %q, want the provider's authorization endpoint", nav.Header.Get("Location"))
	}
	st := started{loc: loc, state: loc.Query().Get("state")}
	for _, c := range bindingCookies(nav) {
		if c.Name == oauth.CookieName(st.state) && c.Secure && c.HttpOnly && c.SameSite == http.SameSiteLaxMode {
			st.cookie = c
		}
	}
	if st.cookie == nil {
		t.Fatalf("opening the ticket set no binding cookie %s: %v", oauth.CookieName(st.state), nav.Header.Values("Set-Cookie"))
	}

	// Opened again (another browser that read the URL): nothing.
	again := open(http.MethodGet, u)
	apitest.WantProblem(t, again, http.StatusBadRequest, problem.CodeInvalidState)
	if cs := bindingCookies(again); len(cs) != 0 {
		t.Errorf("a spent ticket set the binding cookie %s", cs[0].Name)
	}
	back := x.approve(t, st)
	apitest.WantProblem(t, x.callback(t, back, nil), http.StatusBadRequest, problem.CodeStateNotBound)
	apitest.WantStatus(t, x.finishLink(t, me, back, st.cookie), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'ticket-subject'`, me.UserID); n != 1 {
		t.Fatalf("%d identities linked through the ticket, want 1", n)
	}

	// A ticket not opened within its 60 seconds.
	u = post()
	x.exec(t, `UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE link_user_id = $1`, me.UserID)
	late := open(http.MethodGet, u)
	apitest.WantProblem(t, late, http.StatusBadRequest, problem.CodeInvalidState)
	if cs := bindingCookies(late); len(cs) != 0 {
		t.Errorf("an expired ticket set the binding cookie %s", cs[0].Name)
	}

	// No ticket, two, or one never issued.
	for _, q := range []string{"", "?ticket=a&ticket=b", "?ticket=" + strings.Repeat("A", 43)} {
		r := x.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/auth/oauth/fake/link" + q})
		if r.Status != http.StatusBadRequest || len(bindingCookies(r)) != 0 {
			t.Errorf("GET link%s: %d %s, want 400 and no cookie", q, r.Status, r.Body)
		}
	}
	apitest.WantProblem(t, x.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/auth/oauth/nosuch/link?ticket=x"}),
		http.StatusNotFound, problem.CodeUnknownProvider)
}
