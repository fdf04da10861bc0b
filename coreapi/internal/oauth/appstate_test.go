package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestAppStateEchoed: an app's OAuth library sends its own state to
// authorize and refuses an answer that does not bring it back unchanged
// (RFC 6749 sections 4.1.1 and 4.1.2). The callback's redirect to
// return_to carries it as state, byte for byte, beside the code and iss;
// a start without one gets none back. A state that RFC 6749 (Appendix A:
// printable ASCII) does not allow, or longer than oauth.MaxAppState, or
// sent twice, is refused before anything is stored.
func TestAppStateEchoed(t *testing.T) {
	const app = "https://app.example.com/signed-in?from=tollgate;x=1"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	pk := newAppPKCE(t)

	for _, tc := range []struct{ name, state string }{
		{"a library's random value", "af0ifjsldkj"},
		{"every printable character", ` !"#$%&'()*+,-./0123456789:;<=>?@AZ[\]^_` + "`az{|}~"},
		{"the longest", strings.Repeat("s", oauth.MaxAppState)},
		{"a value that looks like parameters", "state=1&code=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := x.begin(t, pk.query(app)+"&state="+url.QueryEscape(tc.state))
			if st.state == tc.state {
				t.Fatal("the app's state was sent to the provider as the flow's state")
			}
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != http.StatusFound {
				t.Fatalf("callback: %d %s, want 302 to return_to", r.Status, r.Body)
			}
			loc, err := url.Parse(r.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			q := loc.Query()
			if got := q["state"]; len(got) != 1 || got[0] != tc.state {
				t.Errorf("Location = %q: state %q, want exactly %q", loc, got, tc.state)
			}
			if !strings.HasPrefix(loc.RawQuery, "from=tollgate;x=1&code=") {
				t.Errorf("Location = %q: the listed URL's own parameters are not kept as written", loc)
			}
			if r := x.exchangeWith(t, app, q.Get("code"), pk.verifier); r.Status != http.StatusOK {
				t.Errorf("exchange: %d %s", r.Status, r.Body)
			}
		})
	}

	// An empty value is no value (RFC 6749 section 3.1).
	for _, sent := range []string{"", "&state="} {
		st := x.begin(t, pk.query(app)+sent)
		r := x.callback(t, x.approve(t, st), st.cookie)
		loc, err := url.Parse(r.Header.Get("Location"))
		if err != nil || r.Status != http.StatusFound {
			t.Fatalf("callback: %d %q", r.Status, r.Header.Get("Location"))
		}
		if _, ok := loc.Query()["state"]; ok {
			t.Errorf("start with %q: Location = %q: a state the app never sent", sent, loc)
		}
	}

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct{ name, query string }{
			{"too long", "&state=" + strings.Repeat("s", oauth.MaxAppState+1)},
			{"a control character", "&state=a%0Ab"},
			{"DEL", "&state=a%7Fb"},
			{"not ASCII", "&state=" + url.QueryEscape("café")},
			{"sent twice", "&state=a&state=b"},
		} {
			r := x.authorize(t, pk.query(app)+tc.query, "192.0.2.7")
			if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidRequest {
				t.Errorf("state %s: %d %s, want 400 %s", tc.name, r.Status, r.Body, problem.CodeInvalidRequest)
			}
			if c := r.Header.Get("Set-Cookie"); c != "" {
				t.Errorf("state %s: a refused start set a cookie: %s", tc.name, c)
			}
		}
		if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
			t.Errorf("refused starts left %d state rows", n)
		}
	})
}

// TestAppStateWithoutAllowList: without OAUTH_ALLOWED_RETURN_URLS
// (development) the callback answers the code as JSON, and the app's
// state beside it.
func TestAppStateWithoutAllowList(t *testing.T) {
	x := start(t)
	st := x.begin(t, "?state=dev-state")
	r := x.callback(t, x.approve(t, st), st.cookie)
	var h struct {
		Code  string `json:"code"`
		State string `json:"state"`
	}
	if r.Status != http.StatusOK {
		t.Fatalf("callback: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &h)
	if h.State != "dev-state" || len(h.Code) != 43 {
		t.Fatalf("callback body %s: want {code, state: dev-state}", r.Body)
	}
	st = x.begin(t, "")
	if r := x.callback(t, x.approve(t, st), st.cookie); strings.Contains(string(r.Body), "state") {
		t.Errorf("callback body %s: a state the app never sent", r.Body)
	}
}
