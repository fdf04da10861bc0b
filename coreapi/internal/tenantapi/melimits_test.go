package tenantapi_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestDisplayNameChangesLimited: a display-name change writes a
// user.profile_updated row in every tenant the account belongs to, and
// any member could make as many as they liked, flooding the audit logs
// of other tenants. Now an account makes at most
// Options.DisplayNameChangesPerHour of them an hour: the next is 429 with
// Retry-After, the name unchanged and no audit row written anywhere.
// Setting the name the account already has changes nothing and is not
// counted, and another account keeps its own budget.
func TestDisplayNameChangesLimited(t *testing.T) {
	t.Parallel()
	const limit = 3
	w := apitest.SeedWorld(t, start(t, apitest.Options{DisplayNameChangesPerHour: limit}))
	w.E.SeedMember(t, w.B, w.Admin.UserID, "member")
	rows := func() int {
		var n int
		if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_events WHERE action = 'user.profile_updated'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rename := func(name string) apitest.Response {
		return w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", map[string]any{"display_name": name})
	}
	for i := range limit {
		apitest.WantStatus(t, rename(fmt.Sprintf("Ada %d", i)), 200)
	}
	if n := rows(); n != 2*limit {
		t.Fatalf("%d user.profile_updated rows after %d renames in two tenants, want %d", n, limit, 2*limit)
	}
	r := rename("One too many")
	apitest.WantProblem(t, r, 429, "too_many_requests")
	if r.Header.Get("Retry-After") == "" || !strings.Contains(r.Problem(t).Detail, "display name") {
		t.Errorf("refusal: Retry-After %q, detail %q", r.Header.Get("Retry-After"), r.Problem(t).Detail)
	}
	if n := rows(); n != 2*limit {
		t.Errorf("%d user.profile_updated rows after a refused rename, want %d", n, 2*limit)
	}
	var name string
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT display_name FROM users WHERE id = $1`, w.Admin.UserID).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Ada %d", limit-1); name != want {
		t.Errorf("display name %q after a refused rename, want %q", name, want)
	}
	// The name it has: nothing to change, nothing refused.
	apitest.WantStatus(t, rename(name), 200)
	// Another account's budget is its own.
	apitest.WantStatus(t, w.E.Send(t, &w.Member, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "Grace"}), 200)
}

// TestPatchMeIsAllOrNothing: PATCH /users/me with both an email and a
// display name ran the email change and then the name change in two
// transactions, so a name change refused after the email change went
// through (here by the display-name limit) answered the refusal alone
// while the verification link had been made, mailed and audited. Now the
// request is one transaction: refused, it writes nothing (no link, no
// mail, no audit row, no new name); accepted, it does both (202).
func TestPatchMeIsAllOrNothing(t *testing.T) {
	t.Parallel()
	w := apitest.SeedWorld(t, start(t, apitest.Options{DisplayNameChangesPerHour: 1}))
	count := func(q string, args ...any) int {
		var n int
		if err := w.E.DB.Pool.QueryRow(t.Context(), q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	written := func() (links, mails, audits int) {
		return count(`SELECT count(*) FROM action_tokens WHERE user_id = $1`, w.Admin.UserID),
			count(`SELECT count(*) FROM mail_queue`),
			count(`SELECT count(*) FROM audit_events WHERE target_id = $1`, w.Admin.UserID)
	}
	patch := func(body map[string]any) apitest.Response {
		return w.E.Send(t, &w.Admin, "PATCH", "/api/v1/users/me", body)
	}
	// The account's one name change of the hour.
	apitest.WantStatus(t, patch(map[string]any{"display_name": "Ada"}), 200)
	l0, m0, a0 := written()
	apitest.WantProblem(t, patch(map[string]any{"email": "ada@new.test", "display_name": "Countess"}), 429, "too_many_requests")
	if l, m, a := written(); l != l0 || m != m0 || a != a0 {
		t.Errorf("a refused PATCH wrote %d links, %d mails, %d audit rows", l-l0, m-m0, a-a0)
	}
	var name string
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT display_name FROM users WHERE id = $1`, w.Admin.UserID).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "Ada" {
		t.Errorf("display name %q after a refused PATCH, want Ada", name)
	}
	// Both at once, within every limit: both done.
	r := w.E.Send(t, &w.Member, "PATCH", "/api/v1/users/me", map[string]any{"email": "grace@new.test", "display_name": "Grace"})
	apitest.WantStatus(t, r, 202)
	var me struct {
		DisplayName string `json:"display_name"`
		Email       string `json:"email"`
	}
	r.JSON(t, &me)
	if me.DisplayName != "Grace" || me.Email != "member@acme.test" {
		t.Errorf("PATCH of both answered %+v, want the new name and the old address (it changes on verify)", me)
	}
	if got := w.E.AuditActions(t, w.A); !slices.Contains(got, "user.email_change_requested") {
		t.Errorf("audit %v, want the email change requested", got)
	}
}
