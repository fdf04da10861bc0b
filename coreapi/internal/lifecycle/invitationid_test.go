package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestMalformedInvitationID: DELETE /invitations/{id} and POST
// /invitations/{id}/resend answer an id that is no UUID (or a UUID in
// another spelling than the 36-character hyphenated one) 400 invalid_id,
// as the user, role, API key and service account routes do, and touch
// nothing; they answered 404 not_found, as for an invitation that does
// not exist. A well-formed id of no invitation stays 404.
func TestMalformedInvitationID(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	inv := x.invite(t, owner.id, "invitee@example.com")
	x.mail(t, "invitee@example.com", "invited")
	sent := x.mailsTo("invitee@example.com")

	for _, id := range []string{"not-a-uuid", "{" + inv.ID + "}", "urn:uuid:" + inv.ID, strings.ReplaceAll(inv.ID, "-", "")} {
		t.Run(id, func(t *testing.T) {
			wantProblem(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+id, nil), http.StatusBadRequest, problem.CodeInvalidID)
			wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+id+"/resend", nil), http.StatusBadRequest, problem.CodeInvalidID)
		})
	}
	const none = "00000000-0000-0000-0000-000000000001"
	wantProblem(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+none, nil), http.StatusNotFound, problem.CodeNotFound)
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+none+"/resend", nil), http.StatusNotFound, problem.CodeNotFound)

	if got := x.invitationID(t, "invitee@example.com"); got != inv.ID {
		t.Errorf("pending invitation %s, want %s untouched", got, inv.ID)
	}
	x.flush(t)
	if n := x.mailsTo("invitee@example.com"); n != sent {
		t.Errorf("%d mails to the invitee, want %d (nothing resent)", n, sent)
	}
}
