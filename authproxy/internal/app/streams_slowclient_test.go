package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// floodBlocked waits until each of the app's n floods is stuck (stuck):
// every buffer on the way to a client that reads nothing is full, and the
// proxy's relay is blocked writing to that client.
func floodBlocked(t *testing.T, a *streamApp, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-a.stuck:
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d floods stuck within 20 s: the proxy still reads what they write (%d bytes)", i, n, a.flooded.Load())
		}
	}
}

// A stream whose client stopped reading ends promptly when it is closed:
// the relay blocked writing to that client is given the close wait (one
// second), not WRITE_TIMEOUT (two minutes here, to tell the two apart),
// to finish, so revocation releases the stream, its slot under the caps
// and its upstream connection at once, for a WebSocket (its close frame
// cannot be written: the connection is dropped) as for an event stream.
func TestStreamOfAClientThatStopsReadingEndsPromptlyOnRevocation(t *testing.T) {
	e, a := startStreams(t, map[string]string{"WRITE_TIMEOUT": "2m"})
	tok := e.token(nil)
	e.openWS(t, "/notes/ws/flood", tok) // never read
	e.openSSE(t, "/notes/events/flood", tok)
	floodBlocked(t, a, 2)
	p := notesProjection()
	p.Permissions = []string{"tenant:read"}
	e.core.SetProjection(p)
	start := time.Now()
	e.publish("auth.invalidate.user." + userID)
	eventually.Within(t, 20*time.Second, func() error {
		for _, kind := range []string{"websocket", "sse"} {
			if n := metricCount(t, e, `authproxy_streams_closed_total{kind="`+kind+`",reason="insufficient_scope"}`); n != 1 {
				return fmt.Errorf("%s streams closed insufficient_scope = %v, want 1", kind, n)
			}
		}
		return nil
	})
	t.Logf("both streams released %v after the event", time.Since(start))
	if open := e.app.Streams.Open(); open != 0 {
		t.Fatalf("%d streams still open", open)
	}
}

// On shutdown, a client that stopped reading does not hold the drain for
// WRITE_TIMEOUT either: the proxy is done with its streams within the
// close wait. WRITE_TIMEOUT, the drain's and the shutdown's deadlines are
// minutes here, so that waiting for any of them tells.
func TestStreamOfAClientThatStopsReadingEndsPromptlyOnShutdown(t *testing.T) {
	e, a := startStreams(t, map[string]string{"WRITE_TIMEOUT": "2m", "STREAM_DRAIN_TIMEOUT": "1m", "SHUTDOWN_TIMEOUT": "2m"})
	tok := e.token(nil)
	e.openWS(t, "/notes/ws/flood", tok)
	e.openSSE(t, "/notes/events/flood", tok)
	floodBlocked(t, a, 2)
	start := time.Now()
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return %v after the shutdown began, with a client that does not read", time.Since(start))
	}
}
