package natsinv

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestRefusedSubscriptionIsNoFeed: the NATS server's permissions refuse
// the proxy's subscription to auth.invalidate.> (a deployment that
// restricts subjects and forgot the proxy's). The connection is up, but no
// invalidation will ever arrive: the caches must stay in bounded
// staleness and the feed must not read as connected, where the proxy
// trusted its caches for their whole TTL and said nothing but a warning.
func TestRefusedSubscriptionIsNoFeed(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
			Subscribe: &natsserver.SubjectPermission{Allow: []string{invalidation.SubjectKeysChanged, "_INBOX.>"}},
		}}}}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	c, err := projection.New(projection.Options{Size: 100, TTL: time.Minute, MaxStaleness: time.Second}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := metrics.New()
	s, err := Connect(Options{URL: "nats://proxy:pw@" + ns.Addr().String(), KeysChanged: func() {}}, c, quiet(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error {
		if err := testenv.Want("connected", s.Connected(), false); err != nil {
			return err
		}
		return testenv.Want("bounded staleness", c.BoundedStaleness(), true)
	})
	// And it stays so: nothing on this connection reports it live.
	time.Sleep(200 * time.Millisecond)
	if s.Connected() || !c.BoundedStaleness() {
		t.Fatalf("connected = %v, bounded staleness = %v: the feed reads live with its subscription refused", s.Connected(), c.BoundedStaleness())
	}
}
