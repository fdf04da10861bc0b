package streams

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// activeManager is a Manager over a projection cache whose every member
// is active, with one started stream per claims.
func activeManager(t *testing.T, claims ...*tokens.Claims) (*Manager, []*Conn) {
	t.Helper()
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute}, &slowCore{}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	pc.Reconnected()
	m := New(Options{}, pc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	var cs []*Conn
	t.Cleanup(func() { closeAfterDrain(t, m, pc, cs...) })
	for _, cl := range claims {
		c, err := m.reserveAt("sse", "/x", cl, rt, "r", origin{path: "/x", method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		m.start(c, func(reason string) { m.release(c, reason) })
		cs = append(cs, c)
	}
	return m, cs
}

// KeySet ends the streams whose token's key left the set or was replaced
// under its kid, and only those: the remaining key's, an anonymous one and
// an API key's (no signing key) stay open.
func TestKeySetEndsStreamsOfRemovedKeys(t *testing.T) {
	k1, k2, k3 := &jwks.Key{Kid: "k1"}, &jwks.Key{Kid: "k2"}, &jwks.Key{Kid: "k3"}
	claims := func(sub string, k *jwks.Key) *tokens.Claims {
		return &tokens.Claims{Sub: sub, Tid: "t", Sid: "s-" + sub, Exp: time.Now().Add(time.Hour).Unix(), Key: k}
	}
	m, cs := activeManager(t, claims("a", k1), claims("b", k2), claims("c", k3), claims("d", nil), nil)
	time.Sleep(100 * time.Millisecond) // the rechecks on opening (all admitted)
	for _, c := range cs {
		if c.Reason() != "" {
			t.Fatalf("stream %d closed before the key change: %q", c.id, c.Reason())
		}
	}
	// k1 removed; k3's kid now names another key.
	m.KeySet(&jwks.Set{Keys: map[string]*jwks.Key{"k2": k2, "k3": {Kid: "k3"}}})
	for i, want := range []string{ReasonKeyRemoved, "", ReasonKeyRemoved, "", ""} {
		if got := cs[i].Reason(); got != want {
			t.Errorf("stream %d: reason %q, want %q", i, got, want)
		}
	}
}

// A stream is decided once more after it joined the indexes: an
// invalidation that arrived between the request's decision and the
// stream's registration (which no recheck could find) still ends it.
func TestStreamDecidedAgainOnceRegistered(t *testing.T) {
	m := New(Options{}, noMembership{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: "alice", Tid: "t", Sid: "s"}, rt, "r", origin{path: "/x", method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan string, 1)
	m.start(c, func(r string) { shut <- r })
	select {
	case r := <-shut:
		if r != ReasonNoMembership {
			t.Fatalf("reason %q, want %s", r, ReasonNoMembership)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open: not decided again once registered")
	}
}
