package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// demo is what the seed created or found.
type demo struct {
	TenantID string
	AdminID  string
	MemberID string
}

// apiError is a non-2xx answer of the public API.
type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("status %d: %s", e.Status, strings.TrimSpace(e.Body))
}

type apiClient struct {
	base  string
	http  *http.Client
	token string
}

// do sends body as JSON (when non-nil) and decodes a 2xx JSON answer into out.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %w", method, path, &apiError{Status: resp.StatusCode, Body: string(data)})
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TenantID    string `json:"tenant_id"`
}

type userResponse struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	TenantID string `json:"tenant_id"`
}

func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// seedLookup is what the seed reads from the stack's database rather than
// ask the API: whether the demo admin has an account, and the id of the
// demo member in the admin's tenant ("" when it is none). Asked through
// the API, a first run's sign-in answered 400 and a later run's POST
// /users 409, each logged by coreapi and authproxy as a failed request
// before the tour.
type seedLookup struct {
	adminExists bool
	memberID    string
}

// lookupSeed reads seedLookup from the database of dbURL; adminTenant is
// the demo tenant once known ("" before the admin signed in).
func lookupSeed(ctx context.Context, dbURL string, o options, adminTenant string) (seedLookup, error) {
	var l seedLookup
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return l, fmt.Errorf("look up the demo users: %w", err)
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1)),
       coalesce((SELECT u.id::text FROM users u JOIN memberships m ON m.user_id = u.id
                 WHERE lower(u.email) = lower($2) AND m.tenant_id::text = $3), '')`,
		o.email, o.memberEmail, adminTenant).Scan(&l.adminExists, &l.memberID)
	if err != nil {
		return l, fmt.Errorf("look up the demo users: %w", err)
	}
	return l, nil
}

// seed makes sure the demo admin (owner of the demo tenant) and a demo member
// exist, writing through the public API only: it signs the admin in when
// the database has the account, or signs it up on the first run, then adds
// the member unless the database has it in the demo tenant. So a run's
// seed sends no request that fails.
func seed(ctx context.Context, base, dbURL string, o options) (demo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := &apiClient{base: base, http: &http.Client{Timeout: 15 * time.Second}}
	var d demo

	l, err := lookupSeed(ctx, dbURL, o, "")
	if err != nil {
		return d, err
	}
	var tok tokenResponse
	if l.adminExists {
		err = c.do(ctx, http.MethodPost, "/api/v1/auth/token", map[string]string{
			"grant_type": "password", "email": o.email, "password": o.password,
		}, &tok)
		if s := statusOf(err); s == http.StatusBadRequest || s == http.StatusUnauthorized {
			return d, fmt.Errorf("%w (the demo admin exists with another password: pass -password or run make reset)", err)
		}
	} else {
		err = c.do(ctx, http.MethodPost, "/api/v1/auth/signup", map[string]string{
			"email": o.email, "password": o.password, "tenant_name": o.tenant, "display_name": "Demo Admin",
		}, &tok)
	}
	if err != nil {
		return d, err
	}
	if tok.AccessToken == "" {
		return d, errors.New("token response without access_token")
	}
	c.token = tok.AccessToken

	var me userResponse
	if err := c.do(ctx, http.MethodGet, "/api/v1/users/me", nil, &me); err != nil {
		return d, err
	}
	d.AdminID, d.TenantID = me.ID, me.TenantID
	if d.TenantID == "" {
		d.TenantID = tok.TenantID
	}

	if l, err = lookupSeed(ctx, dbURL, o, d.TenantID); err != nil {
		return d, err
	}
	d.MemberID = l.memberID
	if d.MemberID == "" {
		var member userResponse
		err = c.do(ctx, http.MethodPost, "/api/v1/users", map[string]any{
			"email": o.memberEmail, "password": o.password, "display_name": "Demo Member", "roles": []string{"member"},
		}, &member)
		switch {
		case err == nil:
			d.MemberID = member.ID
		case statusOf(err) == http.StatusConflict: // added meanwhile
			id, err := findUser(ctx, c, o.memberEmail)
			if err != nil {
				return d, err
			}
			d.MemberID = id
		default:
			return d, err
		}
	}
	if d.MemberID == "" {
		return d, errors.New("no id for the demo member")
	}
	return d, nil
}

// findUser pages through the tenant's users for email.
func findUser(ctx context.Context, c *apiClient, email string) (string, error) {
	cursor := ""
	for range 100 {
		var page struct {
			Data       []userResponse `json:"data"`
			NextCursor string         `json:"next_cursor"`
		}
		q := url.Values{"limit": {"100"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/users?"+q.Encode(), nil, &page); err != nil {
			return "", err
		}
		for _, u := range page.Data {
			if strings.EqualFold(u.Email, email) {
				return u.ID, nil
			}
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	return "", fmt.Errorf("user %s not found in the demo tenant", email)
}

// printTour writes the copy-paste curl tour.
func printTour(w io.Writer, d demo, o options, natsURL string) {
	fmt.Fprintf(w, `
Tollgate is running.
  authproxy  %[1]s (admin %[2]s)   ->   coreapi %[3]s (admin %[4]s)
%[12]s
  NATS       %[5]s
  database   %[13]s
  demo       tenant %[6]s
             admin  %[7]s / %[8]s (owner)
             member %[9]s / %[8]s (id %[10]s)
  mail       %[14]s
%[11]s
Ctrl-C stops everything.
`, publicURL(o.proxyAddr), publicURL(o.proxyAdmin), o.coreAddr, o.coreAdmin, natsURL,
		d.TenantID, o.email, o.password, o.memberEmail, d.MemberID, tourScript(d, o), appsWhere(o), o.database, mailWhere(o))
}

// appsWhere says in the tour what the proxy routes besides coreapi: the
// example notes app, or the user's route table and catalog.
func appsWhere(o options) string {
	if len(o.userApps) == 0 {
		return "                                   ->   notes   " + o.notesAddr + " (example app, /notes)"
	}
	return "                                   ->   your apps (" + strings.Join(o.userApps, ", ") + ")\n" +
		"  notes      " + o.notesAddr + " (the example app, behind the proxy only where your rules route to it)"
}

// publicURL is localURL spelled the way a person types it.
func publicURL(addr string) string {
	return strings.Replace(localURL(addr), "127.0.0.1", "localhost", 1)
}

// tourScript is the tour's shell commands; the stack's test runs them, twice
// on the same database. Whatever it creates has a name unique to the run.
func tourScript(d demo, o options) string {
	return fmt.Sprintf(`
RUN=$(date +%%s)-$$   # makes the names below unique, so the tour can run again

# 1. Sign up a tenant of your own (creates the tenant and its owner)
curl -s %[1]s/api/v1/auth/signup -H 'content-type: application/json' \
  -d '{"email":"you-'$RUN'@example.com","password":"a long passphrase 42","tenant_name":"Acme '$RUN'"}'; echo

# 2. Get a token as the demo admin
token() { curl -s %[1]s/api/v1/auth/token -H 'content-type: application/json' \
  -d '{"grant_type":"password","email":"'$1'","password":"%[3]s","tenant_id":"%[4]s"}' \
  | sed -E 's/.*"access_token":"([^"]+)".*/\1/'; }
TOKEN=$(token %[2]s)

# 3. Who am I (roles and permissions come from the proxy's cached projection)
curl -s %[1]s/api/v1/users/me -H "authorization: Bearer $TOKEN"; echo

# 4. Grant the admin role to the demo member, and look at them
curl -s -o /dev/null -w 'grant %%{http_code}\n' -X PUT %[1]s/api/v1/users/%[5]s/roles/admin -H "authorization: Bearer $TOKEN"
curl -s %[1]s/api/v1/users/%[5]s -H "authorization: Bearer $TOKEN"; echo

# 5. Revoke it again (the proxy's cache entry for the member is evicted over NATS)
curl -s -o /dev/null -w 'revoke %%{http_code}\n' -X DELETE %[1]s/api/v1/users/%[5]s/roles/admin -H "authorization: Bearer $TOKEN"

%[11]s# A forged identity header without a token gets 401: the proxy strips it
curl -s -o /dev/null -w 'forged %%{http_code}\n' %[1]s/api/v1/users/me -H 'X-Auth-User-Id: %[7]s'

# The app answers nothing without the proxy's signature
curl -s -o /dev/null -w 'notes direct %%{http_code}\n' %[9]s/notes

# 10. Forgot password: the answer is the same for every address; the reset
#     link (and the verification link of step 1) is in the mail
curl -s -o /dev/null -w 'forgot %%{http_code}\n' %[1]s/api/v1/auth/password/forgot \
  -H 'content-type: application/json' -d '{"email":"%[2]s"}'
%[10]s
# Metrics
curl -s %[8]s/metrics | grep '^authproxy_' | head
`, publicURL(o.proxyAddr), o.email, o.password, d.TenantID, d.MemberID, o.memberEmail, d.AdminID, publicURL(o.proxyAdmin), publicURL(o.notesAddr), readMail(o), appSteps(d, o))
}

// appSteps are the tour's steps through the example notes app, which need
// its routes and its permissions: with the user's route table or catalog in
// their place they would answer 404 or 422, so the tour says how to call
// the user's routes instead.
func appSteps(d demo, o options) string {
	if len(o.userApps) > 0 {
		return fmt.Sprintf(`# 6.-9. Your apps behind the same proxy (%[3]s): the example
#    notes app's steps are left out, they need its routes and permissions.
#    Your routes take the same tokens, e.g. the member's:
MEMBER=$(token %[2]s)
#    curl -s %[1]s/YOUR-ROUTE -H "authorization: Bearer $MEMBER"

`, publicURL(o.proxyAddr), o.memberEmail, strings.Join(o.userApps, ", "))
	}
	return fmt.Sprintf(`# 6. The example notes app behind the same proxy. The member reads notes
#    (notes:read is a member default) but may not write them (notes:write)
MEMBER=$(token %[2]s)
curl -s -o /dev/null -w 'member reads notes %%{http_code}\n' %[1]s/notes -H "authorization: Bearer $MEMBER"
curl -s -w '\nmember writes a note %%{http_code}\n' %[1]s/notes -H "authorization: Bearer $MEMBER" \
  -H 'content-type: application/json' -d '{"text":"hello"}'

# 7. The admin creates a role holding notes:write and grants it to the member
ROLE=note-writer-$RUN
curl -s -o /dev/null -w 'create role %%{http_code}\n' %[1]s/api/v1/roles -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"name":"'$ROLE'","permissions":["notes:write"]}'
curl -s -o /dev/null -w 'grant role %%{http_code}\n' -X PUT %[1]s/api/v1/users/%[3]s/roles/$ROLE -H "authorization: Bearer $TOKEN"

# 8. The member's same token now writes: the grant's invalidation reaches the
#    proxy over NATS within milliseconds (status polls for up to 2 s)
status() { want=$1; shift; for i in $(seq 40); do
  s=$(curl -s -o /dev/null -w '%%{http_code}' "$@"); [ "$s" = "$want" ] && break; sleep 0.05; done; echo "$s"; }
echo "member writes a note after the grant $(status 201 %[1]s/notes -H "authorization: Bearer $MEMBER" \
  -H 'content-type: application/json' -d '{"text":"written by a note-writer"}')"
curl -s %[1]s/notes -H "authorization: Bearer $MEMBER"; echo

# 9. Revoke the role: the next write is refused again
curl -s -o /dev/null -w 'revoke role %%{http_code}\n' -X DELETE %[1]s/api/v1/users/%[3]s/roles/$ROLE -H "authorization: Bearer $TOKEN"
echo "member writes a note after the revoke $(status 403 %[1]s/notes -H "authorization: Bearer $MEMBER" \
  -H 'content-type: application/json' -d '{"text":"too late"}')"

`, publicURL(o.proxyAddr), o.memberEmail, d.MemberID)
}

// mailWhere says in the tour where the mails go.
func mailWhere(o options) string {
	if o.mailUI != "" {
		user, pw, _ := strings.Cut(o.mailAuth, ":")
		return "Mailpit " + o.mailUI + " (user " + user + ", password " + pw + "; every mail the stack sends; SMTP " + o.mailSMTPAddr + ")"
	}
	return "sent to SMTP_URL (Mailpit not started)"
}

// readMail is the tour's last step: list the caught mails.
func readMail(o options) string {
	if o.mailUI == "" {
		return ""
	}
	return fmt.Sprintf(`
# Read the mails in the Mailpit UI at %[1]s, or through its API:
sleep 2; curl -s -u '%[2]s' %[1]s/api/v1/messages | grep -o '"Subject":"[^"]*"' | head
`, o.mailUI, o.mailAuth)[1:]
}
