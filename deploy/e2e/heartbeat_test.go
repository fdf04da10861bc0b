package e2e

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// proxyMetric reads one series (name and labels, as exposed) from p's
// metrics; found is false while the series does not exist.
func proxyMetric(p *service, series string) (v float64, found bool, err error) {
	resp, err := metricsClient.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(s, 64)
			return v, true, err
		}
	}
	return 0, false, sc.Err()
}

// TestOutboxHeartbeatReachesTheProxies: coreapi's relays write the outbox
// heartbeat and publish it through NATS (OUTBOX_HEARTBEAT_INTERVAL, 2 s by
// default), and every proxy receives it, so none calls its feed stale
// (NATS_HEARTBEAT_TIMEOUT, 10 s by default). Were the heartbeat lost
// anywhere on the way, the proxies would trust their caches only for
// MAX_STALENESS, and authproxy_invalidation_feed_stale would be 1. So do
// the relays' own beats, and no relay the heartbeat rows list goes unheard;
// the default timeout fits the interval the rows announce.
func TestOutboxHeartbeatReachesTheProxies(t *testing.T) {
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		// Two arrivals seen here: heartbeats keep coming.
		wantTwoMore(t, p, "heartbeat")
		wantZero(t, p, "authproxy_invalidation_feed_stale")
		// Each relay's own beat (auth.outbox.relay) reaches the proxy too,
		// and every relay the heartbeat rows list is heard.
		wantTwoMore(t, p, "relay")
		wantZero(t, p, "authproxy_outbox_relays_unheard")
		// The rows announce coreapi's interval, and the defaults fit.
		wantZero(t, p, "authproxy_nats_heartbeat_timeout_short")
	}
}

// wantTwoMore waits until proxy p has received two more invalidation
// events of kind than at the first look (and at least one).
func wantTwoMore(t *testing.T, p *service, kind string) {
	t.Helper()
	series := `authproxy_invalidations_received_total{kind="` + kind + `"}`
	var first float64
	eventually.Within(t, 20*time.Second, func() error {
		n, _, err := proxyMetric(p, series)
		if err != nil {
			return err
		}
		if first == 0 {
			first = n
		}
		if n < 1 || n < first+2 {
			return fmt.Errorf("%s received %v %s events (first read %v), want two more", p.name, n, kind, first)
		}
		return nil
	})
}

// wantZero wants proxy p's gauge series present and 0.
func wantZero(t *testing.T, p *service, series string) {
	t.Helper()
	if v, found, err := proxyMetric(p, series); err != nil || !found || v != 0 {
		t.Fatalf("%s: %s %v (found %v, %v), want 0", p.name, series, v, found, err)
	}
}
