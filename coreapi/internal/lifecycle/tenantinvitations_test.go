package lifecycle_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestTenantListTellsWhyTheAcceptWouldRefuse: GET /invitations gives each
// invitation the refusal POST /invitations/accept would answer now (null
// when it would take it), by the accept's own test. The list showed an
// invitation whose sender had been demoted, a role of which had been
// deleted, whose address had become a member's, or into a suspended
// tenant as plainly pending: its admins could not tell it was dead. Each
// case is then accepted: the list and the accept must agree.
func TestTenantListTellsWhyTheAcceptWouldRefuse(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	tid := owner.c.Tid

	type invited struct {
		name, email, token string
		sender             identity.Identity
		// spoil makes the invitation one the accept refuses (nil: it
		// stays acceptable); sender sent it.
		spoil func(t *testing.T, email string, sender identity.Identity)
		want  string // the refusal ("": none)
	}
	cases := []*invited{
		{name: "acceptable"},
		{name: "sender demoted", want: invitations.RefusedInviter, spoil: func(t *testing.T, _ string, sender identity.Identity) {
			x.exec(t, `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, tid, sender.UserID)
		}},
		// The account deleted (by hand: no route deletes a person), its
		// invitations keep no sender (invited_by is set NULL), who holds
		// nothing.
		{name: "sender's account deleted", want: invitations.RefusedInviter, spoil: func(t *testing.T, _ string, sender identity.Identity) {
			x.exec(t, `DELETE FROM users WHERE id = $1`, sender.UserID)
		}},
		{name: "role deleted since", want: invitations.RefusedRoleDeleted, spoil: func(t *testing.T, _ string, _ identity.Identity) {
			x.exec(t, `DELETE FROM roles WHERE tenant_id = $1 AND name = 'temp'`, tid)
		}},
		{name: "address a member's", want: invitations.RefusedMember, spoil: func(t *testing.T, email string, _ identity.Identity) {
			x.SeedMember(t, tid, x.SeedUser(t, email, ""), "member")
		}},
		{name: "expired", want: invitations.RefusedExpired, spoil: func(t *testing.T, email string, _ identity.Identity) {
			x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = $1`, email)
		}},
		{name: "withdrawn", want: invitations.RefusedRevoked, spoil: func(t *testing.T, email string, _ identity.Identity) {
			wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+x.invitationID(t, email), nil), http.StatusNoContent)
		}},
	}
	for i, c := range cases {
		c.email = "invitee" + string(rune('a'+i)) + "@example.com"
		c.sender = x.SeedUserIn(t, tid, "sender"+string(rune('a'+i))+"@acme.test", "admin")
		roleNames := []string{"member"}
		if c.want == invitations.RefusedRoleDeleted {
			x.exec(t, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'temp', '{}')`, tid)
			roleNames = append(roleNames, "temp")
		}
		x.invite(t, c.sender, c.email, roleNames...)
		c.token = x.mail(t, c.email, "invited").Token()
	}
	for _, c := range cases {
		if c.spoil != nil {
			c.spoil(t, c.email, c.sender)
		}
	}

	refusals := x.tenantRefusals(t, owner.id)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := refusals[c.email]
			if !ok {
				t.Fatalf("%s not listed, or listed without a refusal field", c.email)
			}
			if got != c.want {
				t.Errorf("refusal = %q, want %q", got, c.want)
			}
			_, st, code := x.accept(t, nil, map[string]string{"token": c.token, "password": "a long password"})
			if accepted := st == http.StatusOK; accepted != (c.want == "") {
				t.Errorf("accept: %d %s; the list says refusal %q", st, code, got)
			}
		})
	}
	// Accepted now: used.
	if got := x.tenantRefusals(t, owner.id)[cases[0].email]; got != invitations.RefusedUsed {
		t.Errorf("refusal of the accepted invitation = %q, want %q", got, invitations.RefusedUsed)
	}

	// A suspended tenant admits nobody: its invitations say so.
	x.invite(t, owner.id, "later@example.com")
	x.Suspend(t, tid)
	if got := x.tenantRefusals(t, owner.id)["later@example.com"]; got != invitations.RefusedTenantSuspended {
		t.Errorf("refusal in a suspended tenant = %q, want %q", got, invitations.RefusedTenantSuspended)
	}
}

// tenantRefusals reads GET /invitations as as, and returns each listed
// invitation's refusal ("" for null) by address; an invitation without
// the field is left out.
func (x *env) tenantRefusals(t *testing.T, as identity.Identity) map[string]string {
	t.Helper()
	r := x.Get(t, &as, "/api/v1/invitations?limit=200")
	wantStatus(t, r, http.StatusOK)
	var page struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	r.JSON(t, &page)
	out := map[string]string{}
	for _, d := range page.Data {
		var email string
		var refusal *string
		if err := json.Unmarshal(d["email"], &email); err != nil {
			t.Fatal(err)
		}
		raw, ok := d["refusal"]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, &refusal); err != nil {
			t.Fatal(err)
		}
		out[email] = ""
		if refusal != nil {
			out[email] = *refusal
		}
	}
	return out
}

// TestAddingTheInviteeEndsTheirInvitation: POST /users of an address with
// a pending invitation to the tenant (an address without an account: the
// member is added, not invited) withdraws that invitation in the same
// transaction, audited as invitation.revoked with data.via member.added,
// as a member's removal withdraws theirs (via member.removed). It stayed
// pending: listed as such, neither resendable nor acceptable (409
// already_member), its link mailed and live.
func TestAddingTheInviteeEndsTheirInvitation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	inv := x.invite(t, owner.id, "newbie@example.com")
	tok := x.mail(t, "newbie@example.com", "invited").Token()

	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": "newbie@example.com"}), http.StatusCreated)

	if st := x.invitationStatus(t, inv.ID); st != invitations.StatusRevoked {
		t.Errorf("invitation status after the invitee was added: %q, want %q", st, invitations.StatusRevoked)
	}
	if got := x.tenantRefusals(t, owner.id)["newbie@example.com"]; got != invitations.RefusedRevoked {
		t.Errorf("the list's refusal = %q, want %q", got, invitations.RefusedRevoked)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked' AND target_id = $1
AND tenant_id = $2 AND actor_user_id = $3 AND data->>'via' = 'member.added' AND data->>'email' = 'newbie@example.com'`,
		inv.ID, owner.c.Tid, owner.c.Sub); n != 1 {
		t.Errorf("%d invitation.revoked events via member.added, want 1", n)
	}
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusGone || code != problem.CodeInvitationNotActive {
		t.Errorf("accept of the invitation after the invitee was added: %d %s, want 410 invitation_not_active", st, code)
	}
}

// TestMovingToAnInvitedAddressEndsItsInvitation: a member who moves their
// account to an address with a pending invitation to a tenant they belong
// to holds that address as a member when the change is confirmed, as POST
// /users of it would make them: the invitation is withdrawn in the
// change's transaction, audited as invitation.revoked with the member as
// actor and data.via user.email_changed. It stayed pending: listed as
// such (already_member), neither resendable nor acceptable, its link
// mailed and live. Another tenant's invitation to the address, where the
// member does not belong, is theirs to accept now, and stays.
func TestMovingToAnInvitedAddressEndsItsInvitation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@moved.test")
	other := x.signup(t, "owner@elsewhere.test")
	eve := x.signup(t, "eve@moved.test")
	x.SeedMember(t, owner.c.Tid, eve.c.Sub, "member")
	const moved = "eve.new@example.com"
	inv := x.invite(t, owner.id, moved)
	tok := x.mail(t, moved, "T of owner@moved.test").Token()
	kept := x.invite(t, other.id, moved)

	wantStatus(t, x.Send(t, &eve.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": moved}), http.StatusAccepted)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, moved, "Confirm").Token(), "password": pw}), http.StatusOK)

	if st := x.invitationStatus(t, inv.ID); st != invitations.StatusRevoked {
		t.Errorf("the invitation to the address the member moved to is %q, want %q", st, invitations.StatusRevoked)
	}
	if got := x.tenantRefusals(t, owner.id)[moved]; got != invitations.RefusedRevoked {
		t.Errorf("the list's refusal = %q, want %q", got, invitations.RefusedRevoked)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked' AND target_id = $1
AND tenant_id = $2 AND actor_user_id = $3 AND data->>'via' = 'user.email_changed' AND data->>'email' = $4`,
		inv.ID, owner.c.Tid, eve.c.Sub, moved); n != 1 {
		t.Errorf("%d invitation.revoked events via user.email_changed, want 1", n)
	}
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusGone || code != problem.CodeInvitationNotActive {
		t.Errorf("accept of the invitation after the member moved to its address: %d %s, want 410 invitation_not_active", st, code)
	}
	if st := x.invitationStatus(t, kept.ID); st != invitations.StatusPending {
		t.Errorf("another tenant's invitation to the address is %q, want %q", st, invitations.StatusPending)
	}
}

// TestMovingToAnInvitedAddressRacingItsAccept: an accept of the invitation
// to the address a member is moving to, by someone who creates an account
// with it, holds the tenant's lock and the invitation's row when the
// change is confirmed. The change takes the tenant's lock first, as the
// accept does, so it waits for the accept, which takes the address, and
// then answers 409 email_taken. Taken after the account's row and the
// new address, the change's withdrawal waited for the invitation's row
// while the accept's account waited for the address: a deadlock, which
// PostgreSQL ended by failing one of them.
func TestMovingToAnInvitedAddressRacingItsAccept(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	owner := x.signup(t, "owner@race.test")
	eve := x.signup(t, "eve@race.test")
	x.SeedMember(t, owner.c.Tid, eve.c.Sub, "member")
	const moved = "eve.new@example.com"
	inv := x.invite(t, owner.id, moved)
	wantStatus(t, x.Send(t, &eve.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": moved}), http.StatusAccepted)
	confirm := x.mail(t, moved, "Confirm").Token()

	// The accept in flight, as lifecycle's: the tenant's lock, then the
	// invitation's row.
	accept, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = accept.Rollback(context.Background()) }()
	if _, err := accept.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`, owner.c.Tid); err != nil {
		t.Fatal(err)
	}
	if _, err := accept.Exec(ctx, `SELECT 1 FROM invitations WHERE id = $1 FOR UPDATE`, inv.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan apitest.Response, 1)
	go func() {
		done <- x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": confirm, "password": pw})
	}()
	x.DB.WaitForLockWaiters(t, 1) // the change, at a lock the accept holds
	// The accept creates the invitee's account, then marks the invitation.
	if _, err := accept.Exec(ctx, `INSERT INTO users (email, display_name, email_verified_at) VALUES ($1, '', now())`, moved); err != nil {
		t.Fatalf("the accept's account: %v", err)
	}
	if _, err := accept.Exec(ctx, `UPDATE invitations SET status = 'accepted' WHERE id = $1`, inv.ID); err != nil {
		t.Fatalf("the accept's mark: %v", err)
	}
	if err := accept.Commit(ctx); err != nil {
		t.Fatalf("the accept's commit: %v", err)
	}
	wantProblem(t, <-done, http.StatusConflict, problem.CodeEmailTaken)
	if got := x.me(t, eve).Email; got != "eve@race.test" {
		t.Errorf("the member's address is %q, want the one kept", got)
	}
}

// invitationStatus is the stored status of invitation id.
func (x *env) invitationStatus(t *testing.T, id string) string {
	t.Helper()
	var st string
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT status FROM invitations WHERE id = $1`, id).Scan(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
