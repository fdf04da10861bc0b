package streams

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// slowCore answers every projection after a delay, with the tenant's
// status of the moment.
type slowCore struct{ suspended atomic.Bool }

func (f *slowCore) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	time.Sleep(20 * time.Millisecond)
	st := identity.StatusActive
	if f.suspended.Load() {
		st = "suspended"
	}
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: st}, nil
}

// A tenant's suspension closes every stream of the tenant, even when its
// users' streams outnumber the projection fetches the cache runs at once
// (the surplus of a recheck is refused as overloaded and tried again).
func TestRecheckBeyondFetchBound(t *testing.T) {
	core := &slowCore{}
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute, MaxFetches: 2}, core, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.Reconnected()
	m := New(Options{}, pc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	var cs []*Conn
	for i := range 10 {
		c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: fmt.Sprintf("u%d", i), Tid: "t", Sid: fmt.Sprintf("s%d", i)}, rt, "r", origin{path: "/x", method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		m.start(c, func(string) {})
		cs = append(cs, c)
	}
	core.suspended.Store(true)
	inv := Invalidator{Target: pc, Streams: m}
	inv.InvalidateTenant("t")
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range cs {
		for c.Reason() == "" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c.Reason() != "inactive" {
			t.Errorf("stream of %s: reason %q, want inactive", c.claims.Sub, c.Reason())
		}
	}
}
