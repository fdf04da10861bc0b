package lifecycle_test

import (
	"encoding/json"
	"net/http"
	"testing"

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

// invitationStatus is the stored status of invitation id.
func (x *env) invitationStatus(t *testing.T, id string) string {
	t.Helper()
	var st string
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT status FROM invitations WHERE id = $1`, id).Scan(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
