package lifecycle_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// The one address josé@example.com, its é precomposed (U+00E9, NFC) and
// decomposed (e + U+0301, NFD).
const (
	joseNFC = "jos\u00e9@example.com"
	joseNFD = "jose\u0301@example.com"
)

// TestInvitationsCompareNFC: POST /users and POST /invitations take the
// decomposed spelling of an address for the address itself: the account
// of its composed spelling is invited (not a second account created), a
// second invitation is refused as pending, and that account accepts.
func TestInvitationsCompareNFC(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	jose := x.signup(t, joseNFC)

	r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": joseNFD})
	wantStatus(t, r, http.StatusAccepted) // an invitation, not a new account
	if n := x.count(t, `SELECT count(*) FROM users WHERE kind = 'human'`); n != 2 {
		t.Fatalf("%d accounts after POST /users with the NFD spelling of an account's address, want 2", n)
	}
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": joseNFC}),
		http.StatusConflict, problem.CodeInvitationPending)
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE email = $1`, joseNFC); n != 1 {
		t.Errorf("the invitation is not stored under the NFC spelling")
	}
	tk, st, code := x.accept(t, &jose.id, map[string]string{"token": x.mail(t, joseNFC, "You are invited").Token()})
	if st != http.StatusOK || tk.TenantID != owner.c.Tid {
		t.Fatalf("the account accepts its invitation: %d %s", st, code)
	}

	// A pending invitation stored in NFD (one migration 00012 had to
	// leave) is the NFC account's: accepted with its password, it adds
	// that account and creates none.
	other := x.signup(t, "other@acme.test")
	raw, hash, err := onetime.New()
	if err != nil {
		t.Fatal(err)
	}
	x.exec(t, `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, $2, '{member}', $3, $4, now() + interval '1 day')`, other.c.Tid, joseNFD, hash, other.c.Sub)
	tk, st, code = x.accept(t, nil, map[string]string{"token": raw, "password": pw})
	if st != http.StatusOK || claimsOf(t, tk.AccessToken).Sub != jose.c.Sub {
		t.Fatalf("accept of an NFD invitation with the NFC account's password: %d %s", st, code)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE kind = 'human'`); n != 3 {
		t.Errorf("%d accounts after accepting an NFD invitation, want 3", n)
	}

	// An address without an account, invited in NFD then in NFC.
	const zoeNFC, zoeNFD = "zo\u00eb@example.com", "zoe\u0308@example.com"
	if inv := x.invite(t, owner.id, zoeNFD); inv.Email != zoeNFC {
		t.Errorf("invitation of %+q answered as %+q, want %+q", zoeNFD, inv.Email, zoeNFC)
	}
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": zoeNFC}),
		http.StatusConflict, problem.CodeInvitationPending)
}

// TestForgotComparesNFC: a reset asked for with the decomposed spelling
// reaches the account of the composed one.
func TestForgotComparesNFC(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, joseNFC)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": joseNFD}), http.StatusAccepted)
	if n := x.liveLinks(t, a.c.Sub, "password_reset"); n != 1 {
		t.Fatalf("%d reset links for the account after a forgot with the NFD spelling, want 1", n)
	}
	tok := x.mail(t, joseNFC, "Reset").Token() // to the account's spelling
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the new password"}), http.StatusNoContent)
	wantStatus(t, x.token(t, joseNFD, "the new password"), http.StatusOK)
}

// TestEmailChangeComparesNFC: an email change to the decomposed spelling
// of another account's address is taken; one to a new address stores its
// composed spelling.
func TestEmailChangeComparesNFC(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "old@example.com")
	x.signup(t, joseNFC)
	wantProblem(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": joseNFD}),
		http.StatusConflict, problem.CodeEmailTaken)

	const zoeNFC, zoeNFD = "zo\u00eb@example.com", "zoe\u0308@example.com"
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": zoeNFD}), http.StatusAccepted)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, zoeNFC, "Confirm").Token(), "password": pw}), http.StatusOK)
	if m := x.me(t, a); m.Email != zoeNFC {
		t.Errorf("address after the change: %+q, want %+q", m.Email, zoeNFC)
	}
}

// TestAcceptEndsTheOtherInvitationsToTheAddress: a tenant could hold two
// pending invitations to one address, spelled in two normal forms (one
// migration 00012 had to leave beside one sent since), until migration
// 00051 kept one of each such pair and made its unique index compare the
// NFC form. Accepting one made the address a member's, so the other
// could be neither accepted nor resent (already_member), and stayed
// pending with its link live. The accept withdraws it in its transaction,
// audited as invitation.revoked with the new member as actor and data.via
// invitation.accepted; another tenant's invitation to the address stays.
// The pair is made as the database held it before 00051, without its
// index.
func TestAcceptEndsTheOtherInvitationsToTheAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.exec(t, `DROP INDEX invitations_tenant_email_nfc_key`)
	owner := x.signup(t, "owner@acme.test")
	other := x.signup(t, "other@acme.test")
	raw, hash, err := onetime.New()
	if err != nil {
		t.Fatal(err)
	}
	var left string
	if err := x.DB.Pool.QueryRow(t.Context(), `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, $2, '{member}', $3, $4, now() + interval '1 day') RETURNING id::text`, owner.c.Tid, joseNFD, hash, owner.c.Sub).Scan(&left); err != nil {
		t.Fatal(err)
	}
	sent := x.invite(t, owner.id, joseNFC)
	kept := x.invite(t, other.id, joseNFC)
	tk, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, joseNFC, "T of owner@acme.test").Token(), "password": pw})
	if st != http.StatusOK {
		t.Fatalf("accept: %d %s", st, code)
	}
	member := claimsOf(t, tk.AccessToken).Sub

	for id, want := range map[string]string{sent.ID: invitations.StatusAccepted, left: invitations.StatusRevoked, kept.ID: invitations.StatusPending} {
		if got := x.invitationStatus(t, id); got != want {
			t.Errorf("invitation %s is %q, want %q", id, got, want)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked' AND target_id = $1
AND tenant_id = $2 AND actor_user_id = $3 AND data->>'via' = 'invitation.accepted' AND data->>'email' = $4`,
		left, owner.c.Tid, member, joseNFD); n != 1 {
		t.Errorf("%d invitation.revoked events via invitation.accepted, want 1", n)
	}
	if _, st, code := x.accept(t, nil, map[string]string{"token": raw, "password": pw}); st != http.StatusGone || code != problem.CodeInvitationNotActive {
		t.Errorf("accept of the other invitation: %d %s, want 410 invitation_not_active", st, code)
	}
}

// TestInvitationBesideALeftoverSpelling: a pending invitation stored in
// another normal form (one migration 00012 had to leave, or one a pod of
// an earlier release wrote during a rollout) is the address's pending
// invitation: inviting the address again is 409 invitation_pending, as
// for one stored in NFC, and makes no second pending invitation (the
// unique index compared lower() of the stored spellings: migration
// 00051).
func TestInvitationBesideALeftoverSpelling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	_, hash, err := onetime.New()
	if err != nil {
		t.Fatal(err)
	}
	x.exec(t, `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, $2, '{member}', $3, $4, now() + interval '1 day')`, owner.c.Tid, joseNFD, hash, owner.c.Sub)
	for _, email := range []string{joseNFC, joseNFD} {
		wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": email}),
			http.StatusConflict, problem.CodeInvitationPending)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE tenant_id = $1 AND status = 'pending'`, owner.c.Tid); n != 1 {
		t.Errorf("%d pending invitations to the address, want 1", n)
	}
}
