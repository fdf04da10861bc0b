package tenantapi_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestTenant(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Get(t, &w.Member, "/api/v1/tenant")
	apitest.WantStatus(t, r, 200)
	var ten tenantapi.Tenant
	r.JSON(t, &ten)
	if ten.ID != w.A || ten.Name != "Acme" || ten.Status != "active" {
		t.Fatalf("tenant = %+v", ten)
	}
	r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"name": "Acme Corp"})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ten)
	if ten.Name != "Acme Corp" {
		t.Fatalf("renamed = %+v", ten)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 0 {
		t.Fatalf("a rename wrote outbox rows: %v", got)
	}
	// A tenant's status is not the API's to change: an owner who suspended
	// their own tenant would have no way back.
	for _, body := range []map[string]any{{"status": "suspended"}, {"status": "active"}, {"name": "X", "status": "suspended"}} {
		r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", body)
		apitest.WantProblem(t, r, 403, problem.CodeOperatorOnly)
	}
	w.E.Get(t, &w.Owner, "/api/v1/tenant").JSON(t, &ten)
	if ten.Status != "active" || ten.Name != "Acme Corp" {
		t.Fatalf("after refused status changes: %+v", ten)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 0 {
		t.Fatalf("a refused status change wrote outbox rows: %v", got)
	}
	// The operator's suspension is announced on the tenant's subject.
	w.E.Suspend(t, w.A)
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.TenantSubject(w.A)}; !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
	var payload struct {
		Reason string `json:"reason"`
		At     int64  `json:"at"`
	}
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT payload->>'reason', (payload->>'at')::bigint FROM outbox`).Scan(&payload.Reason, &payload.At); err != nil {
		t.Fatal(err)
	}
	if payload.Reason != "tenant.suspended" || payload.At <= 0 {
		t.Fatalf("payload = %+v", payload)
	}
	for _, bad := range []map[string]any{{"name": ""}, {}, {"name": longString(201)}} {
		apitest.WantProblem(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", bad), 422, "validation_failed")
	}
	// B is untouched.
	w.E.Get(t, &w.OwnerB, "/api/v1/tenant").JSON(t, &ten)
	if ten.Name != "Bravo" || ten.Status != "active" {
		t.Fatalf("B = %+v", ten)
	}
}

func TestAuditEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, name := range []string{"alpha", "beta", "gamma"} {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": name}), 201)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.OwnerB, "POST", "/api/v1/roles", map[string]any{"name": "other"}), 201)
	var l struct {
		Data       []tenantapi.AuditEvent `json:"data"`
		NextCursor *string                `json:"next_cursor"`
		Total      *int64                 `json:"total"`
	}
	r := w.E.Do(t, apitestReq("GET", "/api/v1/audit-events?limit=2&include_total=true", nil, &w.Admin, false))
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &l)
	if len(l.Data) != 2 || l.NextCursor == nil || l.Total == nil || *l.Total != 3 {
		t.Fatalf("page 1 = %s", r.Body)
	}
	if l.Data[0].ID <= l.Data[1].ID || l.Data[0].Action != "role.created" || l.Data[0].ActorUserID == nil || *l.Data[0].ActorUserID != w.Owner.UserID {
		t.Fatalf("page 1 order/actor = %s", r.Body)
	}
	first := l.Data[0].RequestID
	if first == "" {
		t.Error("audit row lacks the request id")
	}
	cursor := *l.NextCursor
	l.NextCursor, l.Total = nil, nil
	w.E.Get(t, &w.Admin, "/api/v1/audit-events?limit=2&cursor="+cursor).JSON(t, &l)
	if len(l.Data) != 1 || l.NextCursor != nil {
		t.Fatalf("page 2 = %+v", l)
	}
	if string(l.Data[0].Data) != `{"name":"alpha","description":"","permissions":[]}` {
		t.Errorf("data = %s", l.Data[0].Data)
	}
}

func longString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}

// TestTenantRequireMFA: the MFA policy is a tenant setting; switching it
// invalidates every projection of the tenant (which carries it), and
// setting it to what it already is announces nothing and audits nothing.
func TestTenantRequireMFA(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var ten tenantapi.Tenant
	w.E.Get(t, &w.Member, "/api/v1/tenant").JSON(t, &ten)
	if ten.RequireMFA {
		t.Fatal("a new tenant requires MFA")
	}
	apitest.WantProblem(t, w.E.Send(t, &w.Member, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 403, problem.CodeInsufficientScope)
	for _, bad := range []map[string]any{{"require_mfa": "yes"}, {"require_mfa": 1}} {
		r := w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", bad)
		if r.Status != 400 && r.Status != 422 {
			t.Fatalf("require_mfa %v: %d %s", bad["require_mfa"], r.Status, r.Body)
		}
	}
	r := w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ten)
	if !ten.RequireMFA || ten.Name != "Acme" {
		t.Fatalf("tenant = %+v", ten)
	}
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.TenantSubject(w.A)}; !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
	// The policy now confines the owner, who has no second factor, to
	// enrolling one: with one, the same patch changes nothing.
	giveFactor(t, w, w.Owner.UserID)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 200)
	if got := w.E.OutboxSubjects(t); len(got) != 1 {
		t.Fatalf("an unchanged policy wrote outbox rows: %v", got)
	}
	pr := w.E.Do(t, apitest.Request{Method: "GET", Service: true,
		Path: identity.ProjectionPath + "/" + w.Member.UserID + "?tenant_id=" + w.A})
	var p identity.Projection
	pr.JSON(t, &p)
	if !p.TenantRequireMFA || p.MFAEnabled {
		t.Fatalf("projection: tenant_require_mfa %v mfa_enabled %v", p.TenantRequireMFA, p.MFAEnabled)
	}
	var n int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_events WHERE action = 'tenant.updated' AND data->'to'->>'require_mfa' = 'true'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d tenant.updated audit events with require_mfa, want 1", n)
	}
}

// TestTenantUpdateAudited: tenant.updated records the tenant's editable
// fields before ("from") and after ("to"), as role.updated does, so an
// auditor sees what a change changed: the row used to hold the request's
// new values only, which told no one what the name or the policy was. A
// patch that changes nothing writes no row.
func TestTenantUpdateAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// The owner turns the MFA policy off again below: one the policy
	// confines (no second factor) may not, nor one whose session has not
	// given it recently.
	giveFactor(t, w, w.Owner.UserID)
	execSQL(t, w.E, `UPDATE sessions SET amr = '{pwd,otp}', auth_time = now() WHERE id = $1`, w.Owner.SessionID)
	type state struct {
		Name       string `json:"name"`
		RequireMFA bool   `json:"require_mfa"`
	}
	for _, c := range []struct {
		patch    map[string]any
		from, to state
	}{
		{map[string]any{"name": "Acme Corp"}, state{"Acme", false}, state{"Acme Corp", false}},
		{map[string]any{"require_mfa": true}, state{"Acme Corp", false}, state{"Acme Corp", true}},
		{map[string]any{"name": "Acme", "require_mfa": false}, state{"Acme Corp", true}, state{"Acme", false}},
	} {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", c.patch), 200)
		from, to := newestChange[state](t, w, "tenant.updated", w.A)
		if from != c.from || to != c.to {
			t.Errorf("patch %v: from %+v to %+v, want from %+v to %+v", c.patch, from, to, c.from, c.to)
		}
	}
	// A patch that changes nothing answers the tenant as it was and
	// writes no row (it used to write one whose from and to were equal).
	before := w.E.Get(t, &w.Owner, "/api/v1/tenant")
	apitest.WantStatus(t, before, 200)
	for _, patch := range []map[string]any{{"name": "Acme"}, {"require_mfa": false}, {"name": " Acme ", "require_mfa": false}} {
		wantNoChange(t, w, &w.Owner, "/api/v1/tenant", patch, before.Body)
	}
}

// TestConcurrentUpdatesAuditChain: renames of a tenant, and of a member's
// display name, race each other; each audit row's "from" is read under
// the lock its write holds, so the rows chain, each from the one before's
// "to": a "from" read before the lock would name a value a concurrent
// rename had already replaced, and two rows would start from it.
func TestConcurrentUpdatesAuditChain(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var me tenantapi.Me
	w.E.Get(t, &w.Admin, "/api/v1/users/me").JSON(t, &me)
	for _, c := range []struct {
		path, field, action, start string
		as                         *identity.Identity
	}{
		{"/api/v1/tenant", "name", "tenant.updated", "Acme", &w.Owner},
		{"/api/v1/users/me", "display_name", "user.profile_updated", me.DisplayName, &w.Admin},
	} {
		const n = 8
		statuses := make(chan int, n)
		start := make(chan struct{})
		for i := range n {
			go func() {
				<-start
				statuses <- w.E.Send(t, c.as, "PATCH", c.path, map[string]any{c.field: fmt.Sprintf("name %d", i)}).Status
			}()
		}
		close(start)
		for range n {
			if s := <-statuses; s != 200 {
				t.Fatalf("%s: a rename answered %d", c.path, s)
			}
		}
		next := map[string]string{}
		rows, err := w.E.DB.Pool.Query(t.Context(), `SELECT data->'from'->>$3, data->'to'->>$3 FROM audit_events WHERE tenant_id = $1 AND action = $2`,
			w.A, c.action, c.field)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var from, to string
			if err := rows.Scan(&from, &to); err != nil {
				t.Fatal(err)
			}
			if prev, dup := next[from]; dup {
				t.Fatalf("%s: two rows from %q (to %q and %q)", c.action, from, prev, to)
			}
			next[from] = to
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		seen, at := 0, c.start
		for ; seen < n; seen++ {
			to, ok := next[at]
			if !ok {
				break
			}
			at = to
		}
		if seen != n || len(next) != n {
			t.Errorf("%s: rows %v do not chain from %q through all %d renames", c.action, next, c.start, n)
		}
	}
}

// TestTenantPolicyWeakening: turning the tenant's MFA policy off takes a
// person's session that has given its second factor within
// tenantapi.PolicyMaxAge. An API key or a service account holding
// tenant:write is refused (403 principal_not_allowed): a leaked machine
// credential must not strip every member's second factor. Turning the
// policy on, renaming the tenant, and a patch that leaves the policy off
// stay open to them. Every refusal leaves the policy on and writes
// nothing.
func TestTenantPolicyWeakening(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	giveFactor(t, w, w.Owner.UserID)
	stepUp := func(age string) {
		t.Helper()
		execSQL(t, w.E, `UPDATE sessions SET amr = '{pwd,otp}', auth_time = now() - $2::interval WHERE id = $1`, w.Owner.SessionID, age)
	}
	patch := func(as *identity.Identity, body map[string]any) apitest.Response {
		t.Helper()
		return w.E.Send(t, as, "PATCH", "/api/v1/tenant", body)
	}
	key, svc := w.Owner, w.Owner
	key.Principal, key.SessionID = identity.PrincipalAPIKey, ""
	svc.Principal, svc.SessionID = identity.PrincipalService, ""
	off := map[string]any{"require_mfa": false}

	// Off already: a machine's patch that leaves it off, or renames.
	apitest.WantStatus(t, patch(&key, off), 200)
	apitest.WantStatus(t, patch(&svc, map[string]any{"name": "Acme 2", "require_mfa": false}), 200)
	// A machine may turn the policy on.
	apitest.WantStatus(t, patch(&key, map[string]any{"require_mfa": true}), 200)
	subjects := len(w.E.OutboxSubjects(t))

	for _, as := range []*identity.Identity{&key, &svc} {
		apitest.WantProblem(t, patch(as, off), 403, problem.CodePrincipalNotAllowed)
		apitest.WantProblem(t, patch(as, map[string]any{"name": "Other", "require_mfa": false}), 403, problem.CodePrincipalNotAllowed)
		apitest.WantStatus(t, patch(as, map[string]any{"require_mfa": true}), 200)
	}
	// A person: a password-only session, an old second factor, an ended
	// session are all refused.
	stepUp("0 seconds")
	execSQL(t, w.E, `UPDATE sessions SET amr = '{pwd}' WHERE id = $1`, w.Owner.SessionID)
	r := patch(&w.Owner, off)
	apitest.WantProblem(t, r, 401, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) || !strings.Contains(got, "max_age=300") {
		t.Errorf("WWW-Authenticate = %q, want acr_values=\"mfa\" and max_age=300", got)
	}
	stepUp("10 minutes")
	apitest.WantProblem(t, patch(&w.Owner, off), 401, problem.CodeInsufficientUserAuthentication)
	stepUp("0 seconds")
	execSQL(t, w.E, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, w.Owner.SessionID)
	apitest.WantProblem(t, patch(&w.Owner, off), 401, problem.CodeInvalidToken)
	execSQL(t, w.E, `UPDATE sessions SET revoked_at = NULL WHERE id = $1`, w.Owner.SessionID)

	var ten tenantapi.Tenant
	w.E.Get(t, &w.Owner, "/api/v1/tenant").JSON(t, &ten)
	if !ten.RequireMFA || ten.Name != "Acme 2" {
		t.Fatalf("after refusals: tenant = %+v, want the policy on and the name Acme 2", ten)
	}
	if got := w.E.OutboxSubjects(t); len(got) != subjects {
		t.Fatalf("refusals wrote outbox rows: %v", got[subjects:])
	}
	// With a second factor given just now, the owner turns it off.
	r = patch(&w.Owner, off)
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ten)
	if ten.RequireMFA {
		t.Fatalf("tenant = %+v, want the policy off", ten)
	}
}
