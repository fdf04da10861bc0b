package outbox

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// shippedNATSConfig is the NATS authorization the deployment ships.
var shippedNATSConfig = filepath.Join("..", "..", "..", "deploy", "nats", "tollgate.conf")

// startShippedNATS runs a server configured from shippedNATSConfig itself
// (on 127.0.0.1 and a free port), and returns the URLs of its coreapi and
// authproxy users.
func startShippedNATS(t *testing.T) (ns *server.Server, coreURL, proxyURL string) {
	t.Helper()
	t.Setenv("TOLLGATE_NATS_COREAPI_PASSWORD", "core-pw")
	t.Setenv("TOLLGATE_NATS_AUTHPROXY_PASSWORD", "proxy-pw")
	opts, err := server.ProcessConfigFile(shippedNATSConfig)
	if err != nil {
		t.Fatalf("%s: %v", shippedNATSConfig, err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns = natstest.StartWith(t, opts)
	return ns, "nats://coreapi:core-pw@" + ns.Addr().String(), "nats://authproxy:proxy-pw@" + ns.Addr().String()
}

// asyncErrors connects to url as coreapi and the proxies do (the
// client's asynchronous errors, a refused publish or subscription among
// them, recorded), closed when the test ends.
func asyncErrors(t *testing.T, url string) (*nats.Conn, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var errs []string
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err.Error())
		}))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
}

// TestShippedNATSConfig runs the outbox relay as coreapi's user of the
// NATS authorization the deployment ships (deploy/nats/tollgate.conf,
// read from the file), and listens as the proxies' user to the subjects
// they subscribe to: every kind of row (an invalidation of a user, a
// tenant, an API key, everything; a key change; the heartbeat rows) and
// the relay's own beat arrive, nothing is refused or left pending, and
// the relay registers as publishing. The proxies' side, and what the
// configuration refuses, is authproxy/internal/natsinv's test of the same
// name.
func TestShippedNATSConfig(t *testing.T) {
	db := dbtest.New(t)
	_, coreURL, proxyURL := startShippedNATS(t)

	// The proxy's subscriptions (natsinv: auth.invalidate.>, the key
	// changes, the heartbeat, the relays' beats).
	proxy, proxyErrs := asyncErrors(t, proxyURL)
	var mu sync.Mutex
	got := map[string]int{}
	heartbeatRows, relayBeats := 0, 0
	for _, subject := range []string{invalidation.SubjectWildcard, invalidation.SubjectKeysChanged, invalidation.SubjectHeartbeat, invalidation.SubjectRelay} {
		if _, err := proxy.Subscribe(subject, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			got[m.Subject]++
			var ev invalidation.Event
			_ = json.Unmarshal(m.Data, &ev)
			switch {
			case m.Subject == invalidation.SubjectHeartbeat && m.Header.Get(MsgIDHeader) != "" && slices.Contains(ev.Relays, "relay-a"):
				heartbeatRows++
			case m.Subject == invalidation.SubjectRelay && ev.Relay == "relay-a":
				relayBeats++
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := proxy.Flush(); err != nil {
		t.Fatal(err)
	}

	core, coreErrs := asyncErrors(t, coreURL)
	var logs logbuffer.Buffer
	r := NewRelay(db.Pool, core, slog.New(slog.NewJSONHandler(&logs, nil)),
		RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond, ID: "relay-a"})
	startRun(t, r)

	rows := []Row{
		{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked},
		{Subject: invalidation.TenantSubject("t1"), Reason: invalidation.ReasonTenantStatus("suspended")},
		{Subject: invalidation.APIKeySubject("k1"), Reason: invalidation.ReasonAPIKeyRevoked},
		{Subject: invalidation.SubjectAll, Reason: invalidation.ReasonCatalogChanged},
		{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged},
	}
	insert(t, db.Pool, rows...)
	eventually.Within(t, wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, row := range rows {
			if got[row.Subject] == 0 {
				missing = append(missing, row.Subject)
			}
		}
		if heartbeatRows == 0 {
			missing = append(missing, "a heartbeat row listing relay-a")
		}
		if relayBeats == 0 {
			missing = append(missing, "relay-a's beat")
		}
		return want(len(missing) == 0, "not received as the proxies' user: %s", strings.Join(missing, ", "))
	})
	eventually.Within(t, wait, func() error { n := pendingCount(t, db.Pool); return want(n == 0, "%d rows pending", n) })

	if f := r.Stats().Failures; f != 0 {
		t.Errorf("%d publish failures", f)
	}
	if errs := append(coreErrs(), proxyErrs()...); len(errs) > 0 {
		t.Errorf("NATS errors: %q", errs)
	}
	if l := logs.String(); strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
		t.Errorf("the relay logged errors or warnings:\n%s", l)
	}
}

// startRun runs r until the test ends.
func startRun(t *testing.T, r *Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
}
