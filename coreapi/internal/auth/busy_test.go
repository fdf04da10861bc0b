package auth_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

// TestSignInRefusedWhileHashesBusy: with as many password checks under
// way as the hashing slots and their waiting room admit, a sign-in is
// answered 503 with Retry-After at once, before any query: nothing
// reserved or counted against the client or the address, no connection
// of the pool waited for. Checked after its rate limits, it waited for
// the pool with every other one, each request held until its deadline.
// Once a place is free the same password signs in.
func TestSignInRefusedWhileHashesBusy(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "busy@example.com", "Busy")
	var done []func()
	defer func() {
		for _, d := range done {
			d()
		}
	}()
	for {
		d, err := e.passwords.Admit()
		if err != nil {
			break
		}
		done = append(done, d)
	}
	r := e.token(t, map[string]string{"grant_type": "password", "email": "busy@example.com", "password": pw})
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("sign-in with the hashing slots' room full = %d %s, want 503", r.Status, r.Body)
	}
	if ra := r.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if r.Stats.Queries != 0 {
		t.Errorf("a refused sign-in ran %d queries, want none (nothing counted)", r.Stats.Queries)
	}
	done[0]()
	done = done[1:]
	e.login(t, "busy@example.com")
	// The sign-in gave its place back: one more, and the room is full.
	d, err := e.passwords.Admit()
	if err != nil {
		t.Fatalf("Admit after the sign-in = %v, want the place it gave back", err)
	}
	done = append(done, d)
	if _, err := e.passwords.Admit(); !errors.Is(err, password.ErrBusy) {
		t.Errorf("Admit with the room full again = %v, want ErrBusy", err)
	}
}
