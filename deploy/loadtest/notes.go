package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// Row names of the example-app pair; the report puts them side by side.
const (
	notesBareRow = "notes app behind a bare Fiber proxy (pre-signed headers)"
	notesWarmRow = "notes app behind authproxy warm"
)

// measureNotesBare drives GET /notes through the bare proxy in front of the
// example app. The app accepts only signed requests, so the harness signs
// them as authproxy would (one per warm user, with the identity the
// synthetic projection gives), re-signing every 2 s to stay within the
// app's timestamp window; the bare proxy forwards them untouched. Each is
// sent many times, a replay the app accepts only because the harness runs
// it with NOTES_REPLAY_CACHE_SIZE=off.
func (h *harness) measureNotesBare(ctx context.Context, conns int) row {
	signer, err := identity.NewKeySigner(h.notesKey)
	if err != nil {
		return row{name: notesBareRow, conns: conns, note: "signer: " + err.Error()}
	}
	users := h.warmUsers
	var signed atomic.Pointer[[][]byte]
	resign := func() error {
		reqs := make([][]byte, len(users))
		now := time.Now()
		for i, u := range users {
			r, err := http.NewRequest("GET", "http://bench/notes", nil)
			if err != nil {
				return err
			}
			id := identity.Identity{Principal: identity.PrincipalUser, UserID: u.id, TenantID: u.tenant, SessionID: u.session,
				Roles: []string{"member"}, Permissions: []string{"tenant:read", "notes:read"}}
			if err := verify.Sign(r, signer, id, now); err != nil {
				return err
			}
			var b bytes.Buffer
			fmt.Fprintf(&b, "GET /notes HTTP/1.1\r\nHost: bench\r\nUser-Agent: tollgate-loadtest\r\n")
			if err := r.Header.Write(&b); err != nil {
				return err
			}
			b.WriteString("\r\n")
			reqs[i] = b.Bytes()
		}
		signed.Store(&reqs)
		return nil
	}
	if err := resign(); err != nil {
		return row{name: notesBareRow, conns: conns, note: "sign: " + err.Error()}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = resign() // the previous set stays valid for the window
			}
		}
	}()
	n := len(users)
	return h.measure(ctx, notesBareRow, h.bareNotesAddr, conns, func(w, i int) []byte {
		return (*signed.Load())[(w+i*conns)%n]
	})
}
