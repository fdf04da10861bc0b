package lifecycle_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestMyInvitationsListWhatTheAcceptTakes: GET /users/me/invitations lists
// an invitation exactly when POST /invitations/accept would take it. The
// list showed every pending invitation not past its expiry, so one into a
// suspended tenant, one whose sender may no longer send it (demoted, or
// confined by the tenant's MFA policy), one a role of which was deleted
// since, and one into a tenant the caller already belongs to were offered,
// each refused when accepted. Each case is then accepted with the caller's
// bearer: the list and the accept must agree.
func TestMyInvitationsListWhatTheAcceptTakes(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	me := x.signup(t, "me@example.com")
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, me.c.Sub)

	type invited struct {
		name, tenantID, token string
		// spoil makes the invitation one the accept refuses (nil: it
		// stays acceptable).
		spoil func(t *testing.T, tenantID string, sender identity.Identity)
	}
	cases := []invited{
		{name: "acceptable"},
		{name: "tenant suspended", spoil: func(t *testing.T, tid string, _ identity.Identity) { x.Suspend(t, tid) }},
		{name: "sender demoted", spoil: func(t *testing.T, tid string, sender identity.Identity) {
			x.exec(t, `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, tid, sender.UserID)
		}},
		{name: "sender confined by the MFA policy", spoil: func(t *testing.T, tid string, _ identity.Identity) {
			x.exec(t, `UPDATE tenants SET require_mfa = true WHERE id = $1`, tid)
		}},
		{name: "role deleted since", spoil: func(t *testing.T, tid string, _ identity.Identity) {
			x.exec(t, `DELETE FROM roles WHERE tenant_id = $1 AND name = 'temp'`, tid)
		}},
		{name: "already a member", spoil: func(t *testing.T, tid string, _ identity.Identity) {
			x.SeedMember(t, tid, me.c.Sub, "member")
		}},
		{name: "expired", spoil: func(t *testing.T, tid string, _ identity.Identity) {
			x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE tenant_id = $1`, tid)
		}},
		{name: "withdrawn", spoil: func(t *testing.T, tid string, _ identity.Identity) {
			x.exec(t, `UPDATE invitations SET status = 'revoked' WHERE tenant_id = $1`, tid)
		}},
	}
	for i := range cases {
		c := &cases[i]
		ten := x.SeedTenant(t, "Tenant "+c.name)
		c.tenantID = ten.ID
		sender := x.SeedUserIn(t, ten.ID, "sender-"+ten.ID+"@acme.test", "admin")
		x.exec(t, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'temp', '{}')`, ten.ID)
		x.invite(t, sender, me.email, "member", "temp")
		c.token = x.mail(t, me.email, "invited").Token()
		if c.spoil != nil {
			c.spoil(t, ten.ID, sender)
		}
	}

	r := x.Get(t, &me.id, "/api/v1/users/me/invitations")
	wantStatus(t, r, http.StatusOK)
	var list struct {
		Data []struct {
			TenantID string `json:"tenant_id"`
		} `json:"data"`
	}
	r.JSON(t, &list)
	var listed []string
	for _, d := range list.Data {
		listed = append(listed, d.TenantID)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.spoil == nil
			if got := slices.Contains(listed, c.tenantID); got != want {
				t.Errorf("listed = %v, want %v", got, want)
			}
			_, st, code := x.accept(t, &me.id, map[string]string{"token": c.token})
			if accepted := st == http.StatusOK; accepted != want {
				t.Errorf("accept: %d %s; the list says acceptable = %v", st, code, want)
			}
		})
	}
}

// TestMyInvitationsCompareAddressesAsTheAcceptDoes: GET
// /users/me/invitations matches the invited address to the account's as
// the accept does, the invitation's in Unicode NFC. An invitation stored
// in another normal form (one migration 00012 had to leave, or one an
// older release wrote during a rollout) was accepted by the account of
// its NFC spelling but never listed to it; and one stored in the very
// spelling of an account that keeps an address not in NFC was listed to
// it, then refused (invitation_mismatch).
func TestMyInvitationsCompareAddressesAsTheAcceptDoes(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	cases := []struct {
		name, account, invited string
		want                   bool
	}{
		{name: "NFC account, NFC invitation", account: "ana@example.com", invited: "ana@example.com", want: true},
		{name: "NFC account, NFD invitation", account: joseNFC, invited: joseNFD, want: true},
		{name: "NFD account, NFD invitation", account: "zoe\u0308@example.com", invited: "zoe\u0308@example.com", want: false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The account, signed in, its address proven and stored as
			// the case has it.
			a := x.signup(t, fmt.Sprintf("placeholder%d@example.com", i))
			x.exec(t, `UPDATE users SET email = $2, email_verified_at = now() WHERE id = $1`, a.c.Sub, c.account)
			me := a.id

			ten := x.SeedTenant(t, "Inviting "+c.name)
			sender := x.SeedUserIn(t, ten.ID, "sender-"+ten.ID+"@acme.test", "admin")
			raw, hash, err := onetime.New()
			if err != nil {
				t.Fatal(err)
			}
			x.exec(t, `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, $2, '{member}', $3, $4, now() + interval '1 day')`, ten.ID, c.invited, hash, sender.UserID)

			r := x.Get(t, &me, "/api/v1/users/me/invitations")
			wantStatus(t, r, http.StatusOK)
			var list struct {
				Data []struct {
					TenantID string `json:"tenant_id"`
				} `json:"data"`
			}
			r.JSON(t, &list)
			listed := slices.ContainsFunc(list.Data, func(d struct {
				TenantID string `json:"tenant_id"`
			}) bool {
				return d.TenantID == ten.ID
			})
			if listed != c.want {
				t.Errorf("listed = %v, want %v", listed, c.want)
			}
			_, st, code := x.accept(t, &me, map[string]string{"token": raw})
			if accepted := st == http.StatusOK; accepted != c.want {
				t.Errorf("accept: %d %s; want accepted = %v", st, code, c.want)
			}
		})
	}
}
