package natsinv

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// shippedNATSConfig is the NATS authorization the deployment ships.
var shippedNATSConfig = filepath.Join("..", "..", "..", "deploy", "nats", "tollgate.conf")

// TestShippedNATSConfig runs the subscriber as the proxies' user of the
// NATS authorization the deployment ships (deploy/nats/tollgate.conf,
// read from the file) and publishes what coreapi's relay publishes as
// coreapi's user: the subscriber takes every subscription without a
// refusal and applies every kind of event (a user's, a tenant's, an API
// key's, everything, a key change, a heartbeat row, a relay's beat), its
// feed live and fresh. And the proxies' credentials may not publish the
// purge of every cache (auth.invalidate.all) or a key set refetch
// (auth.keys.changed); a client without credentials is refused; a user of
// another account (here with every permission of its own) neither
// reaches the proxies nor hears the invalidations. coreapi's relay under
// the same file is coreapi/internal/outbox's test of the same name.
func TestShippedNATSConfig(t *testing.T) {
	t.Setenv("TOLLGATE_NATS_COREAPI_PASSWORD", "core-pw")
	t.Setenv("TOLLGATE_NATS_AUTHPROXY_PASSWORD", "proxy-pw")
	opts, err := natsserver.ProcessConfigFile(shippedNATSConfig)
	if err != nil {
		t.Fatalf("%s: %v", shippedNATSConfig, err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	// An app's user in the global account, with every permission there.
	opts.Users = append(opts.Users, &natsserver.User{Username: "app", Password: "app-pw"})
	ns := startServer(t, opts)
	addr := ns.Addr().String()

	r := newRecorder(t)
	m := metrics.New()
	var logs logbuffer.Buffer
	var keys atomic.Int64
	var apiKey atomic.Value
	s, err := Connect(Options{URL: "nats://authproxy:proxy-pw@" + addr, HeartbeatTimeout: time.Minute, DropCheck: 10 * time.Millisecond,
		KeysChanged: func(string) { keys.Add(1) }, APIKey: func(id string) { apiKey.Store(id) }},
		r, slog.New(slog.NewJSONHandler(&logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	// The first connection's refetch (TestFirstConnectionRefetchesKeys).
	testenv.Eventually(t, func() error { return testenv.Want("key set refetches", keys.Load(), int64(1)) })

	received := func(kind string) int { return int(testutil.ToFloat64(m.Invalidations.WithLabelValues(kind))) }
	core := connectAs(t, "nats://coreapi:core-pw@"+addr)
	at := time.Now().UnixMilli()
	for _, subject := range []string{invalidation.UserSubject("u1"), invalidation.TenantSubject("t1"), invalidation.APIKeySubject("k1"),
		invalidation.SubjectAll, invalidation.SubjectKeysChanged} {
		publishEvent(t, core, subject, invalidation.Event{At: at})
	}
	publishRow(t, core, invalidation.Event{At: at, Relays: []string{"relay-a"}})
	publishEvent(t, core, invalidation.SubjectRelay, invalidation.Event{At: at, Relay: "relay-a"})
	testenv.Eventually(t, func() error {
		for _, kind := range []string{"user", "tenant", "apikey", "all", "keys", "heartbeat", "relay"} {
			if err := testenv.Want(kind+" events applied", received(kind), 1); err != nil {
				return err
			}
		}
		return nil
	})
	// What each event did: the counters above are counted as an event is
	// handled, the key set's refetch may be asked for just after.
	testenv.Eventually(t, func() error {
		r.mu.Lock()
		users, purges := strings.Join(r.users, ","), r.purges
		r.mu.Unlock()
		if users != "u1" || purges != 1 || keys.Load() != 2 || apiKey.Load() != "k1" {
			return fmt.Errorf("applied: users %q, purges %d, key set refetches %d, API key %v; want u1, 1, 2 (the first connection's, the event's), k1", users, purges, keys.Load(), apiKey.Load())
		}
		return nil
	})
	if stale := testutil.ToFloat64(m.FeedStale); stale != 0 || !s.Connected() {
		t.Fatalf("feed stale %v, connected %v: want a live, fresh feed", stale, s.Connected())
	}

	// The proxies' credentials: refused.
	proxy := connectAs(t, "nats://authproxy:proxy-pw@"+addr)
	for _, subject := range []string{invalidation.SubjectAll, invalidation.SubjectKeysChanged} {
		if err := proxy.Publish(subject, []byte(`{"at":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := proxy.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := proxy.LastError(); !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
			t.Errorf("the proxies' user published %s: last error %v, want a permissions violation", subject, err)
		}
	}
	// No credentials: refused.
	if nc, err := nats.Connect("nats://"+addr, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("connecting without credentials: %v, want an authorization violation", err)
	}
	// Another account: its publications go nowhere near the proxies, and
	// it hears none of coreapi's.
	app := connectAs(t, "nats://app:app-pw@"+addr, nats.NoEcho())
	overheard, err := app.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{invalidation.SubjectAll, invalidation.SubjectKeysChanged} {
		if err := app.Publish(subject, []byte(`{"at":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Flush(); err != nil {
		t.Fatal(err)
	}
	// Then coreapi's: handled in order on each subscription, after
	// anything above that had reached the subscriber.
	publishEvent(t, core, invalidation.UserSubject("u2"), invalidation.Event{At: at})
	publishEvent(t, core, invalidation.SubjectKeysChanged, invalidation.Event{At: at})
	testenv.Eventually(t, func() error {
		if err := testenv.WantAtLeast("user events applied", received("user"), 2); err != nil {
			return err
		}
		return testenv.WantAtLeast("key changes applied", received("keys"), 2)
	})
	if n := received("all"); n != 1 {
		t.Errorf("%d purges of every cache applied, want only coreapi's", n)
	}
	if n := received("keys"); n != 2 {
		t.Errorf("%d key set refetches applied, want only coreapi's two", n)
	}
	if err := app.Flush(); err != nil {
		t.Fatal(err)
	}
	// The server's own advisories ($SYS.ACCOUNT.CLIENT.AUTH.ERR of the
	// connection without credentials above, sent to every account when no
	// system account is configured, at its own pace) are not coreapi's.
	for {
		msg, err := overheard.NextMsg(10 * time.Millisecond)
		if err != nil {
			break
		}
		if !strings.HasPrefix(msg.Subject, "$SYS.") {
			t.Errorf("another account's user heard %s %s, want none of coreapi's", msg.Subject, msg.Data)
		}
	}

	if l := logs.String(); strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
		t.Errorf("the subscriber logged errors or warnings:\n%s", l)
	}
}

// connectAs connects to url without reconnecting, with opts, closed when
// the test ends.
func connectAs(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append(opts, nats.NoReconnect(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// publishEvent publishes ev on subject as coreapi's relay does, and
// returns once the server has it.
func publishEvent(t *testing.T, nc *nats.Conn, subject string, ev invalidation.Event) {
	t.Helper()
	b, _ := json.Marshal(ev)
	if err := nc.Publish(subject, b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Fatal(fmt.Errorf("publish %s: %w", subject, err))
	}
}
