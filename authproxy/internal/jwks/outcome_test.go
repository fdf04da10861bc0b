package jwks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// TestLookupJudgesByTheNewestFetch: within the cooldown, an unknown kid is
// judged by the outcome of the fetch that started last, not by whichever
// fetch happened to end last. A slow fetch that started first and fails
// after a newer one succeeded does not make the kid "unavailable" (503):
// the current set is the one coreapi serves, and the kid is unknown (401).
// And a slow fetch that started first and succeeds after a newer one
// failed does not make the kid "unknown": the newest attempt could not
// read what coreapi serves now.
func TestLookupJudgesByTheNewestFetch(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	for _, tc := range []struct {
		name      string
		slowFails bool // the older, slow fetch fails; else the newer one does
		want      error
	}{
		{"older fails last", true, ErrUnknownKid},
		{"older succeeds last", false, ErrNotLoaded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var holdNext, failNext atomic.Bool
			gate := make(chan struct{})
			entered := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fail := failNext.Swap(false)
				if holdNext.CompareAndSwap(true, false) {
					entered <- struct{}{}
					<-gate
				}
				if fail {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(keySet(t, a))
			}))
			t.Cleanup(srv.Close)
			var opened sync.Once
			open := func() { opened.Do(func() { close(gate) }) }
			t.Cleanup(open)                   // before the server closes: it waits for the held request
			c := newClient(srv.URL, time.Now) // cooldown: a minute
			ctx := context.Background()
			if err := c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}

			// The older fetch, held by the server until the newer one ended.
			holdNext.Store(true)
			failNext.Store(tc.slowFails)
			slow := make(chan error, 1)
			go func() { slow <- c.Refresh(ctx) }()
			<-entered
			failNext.Store(!tc.slowFails)
			if err := c.KeysChanged(ctx); (err != nil) != !tc.slowFails {
				t.Fatalf("newer fetch: %v", err)
			}
			open()
			if err := <-slow; (err != nil) != tc.slowFails {
				t.Fatalf("older fetch: %v", err)
			}

			if _, err := c.Lookup(ctx, "unknown"); !errors.Is(err, tc.want) {
				t.Fatalf("Lookup of an unknown kid within the cooldown = %v, want %v", err, tc.want)
			}
		})
	}
}
