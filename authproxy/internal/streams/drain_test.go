package streams

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// heldLookups is a projection cache whose lookups wait for release (a
// fetch coreapi has not answered yet), then cannot answer. It counts the
// lookups begun and those still running.
type heldLookups struct {
	noStamps
	entered chan struct{} // one send per lookup begun
	release chan struct{}
	begun   atomic.Int32
	running atomic.Int32
}

func (p *heldLookups) Get(context.Context, string, string, string) (*projection.Entry, error) {
	p.begun.Add(1)
	p.running.Add(1)
	defer p.running.Add(-1)
	select {
	case p.entered <- struct{}{}:
	default:
	}
	<-p.release
	return nil, projection.ErrUnavailable
}

// openHeld opens an authenticated stream on m whose transport ends with
// release when closed (ends false: it never ends), and waits for the
// recheck of its registration to be in p's lookup.
func openHeld(t *testing.T, m *Manager, p *heldLookups, ends bool) *Conn {
	t.Helper()
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: "u", Tid: "t", Sid: "s"}, rt, "r", origin{path: "/x", method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	m.start(c, func(reason string) {
		if ends {
			m.release(c, reason)
		}
	})
	select {
	case <-p.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no lookup on registration")
	}
	return c
}

// TestDrainWaitsForRechecks: Drain returns only once no recheck of a
// stream reads the projection cache any more, since the proxy closes the
// cache after it. A recheck waiting for its lookup outlived its stream
// (its fetch ignores the stream's close), and Drain returned as the last
// stream ended: the lookup went on into the closed cache.
func TestDrainWaitsForRechecks(t *testing.T) {
	p := &heldLookups{entered: make(chan struct{}, 1), release: make(chan struct{})}
	m := New(Options{}, p, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	openHeld(t, m, p, true)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- m.Drain(ctx)
	}()
	eventually.Within(t, 5*time.Second, func() error {
		if n := m.Open(); n != 0 {
			return errors.New("the stream is still open")
		}
		return nil
	})
	// The stream is gone; its recheck's lookup is not.
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while %d recheck lookups still ran", err, p.running.Load())
	case <-time.After(200 * time.Millisecond):
	}
	close(p.release)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
		if n := p.running.Load(); n != 0 {
			t.Fatalf("Drain returned while %d recheck lookups still ran", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return once the lookup ended")
	}
}

// TestNoRecheckAfterDrain: once Drain has begun, no recheck starts, even
// of a stream that outlived the drain's window (its transport did not
// end): an invalidation that arrives while the proxy stops (the NATS
// subscription drains after the streams) started a lookup in a
// projection cache about to be closed.
func TestNoRecheckAfterDrain(t *testing.T) {
	p := &heldLookups{entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(p.release)
	m := New(Options{}, p, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	c := openHeld(t, m, p, false)
	defer m.release(c, ReasonShutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := m.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drain of a stream that does not end: %v, want the deadline", err)
	}
	m.RecheckUser("u")
	m.RecheckAll()
	select {
	case <-p.entered:
		t.Fatalf("a lookup began after the drain (%d in all)", p.begun.Load())
	case <-time.After(200 * time.Millisecond):
	}
}

// drainNow drains m, whose streams end as they are closed.
func drainNow(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Drain(ctx); err != nil {
		t.Errorf("drain: %v", err)
	}
}

// closeAfterDrain closes pc, which m's rechecks read, once m is drained,
// as the proxy does (App.Serve), and fails the test if a recheck of one of
// cs still runs as pc closes: closed under it, a lookup ran into a
// closed cache. The streams of cs end as they are closed (their shutdown
// releases them).
func closeAfterDrain(t *testing.T, m *Manager, pc *projection.Cache, cs ...*Conn) {
	t.Helper()
	drainNow(t, m)
	for _, c := range cs {
		if c.rechecking.Load() {
			t.Errorf("the projection cache closed while stream %d was being decided again", c.id)
		}
	}
	pc.Close()
}
