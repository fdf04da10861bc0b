package jwks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

func TestJitterBounds(t *testing.T) {
	d := time.Second
	tests := []struct {
		name   string
		got    time.Duration
		lo, hi time.Duration
	}{
		{"spread low", spread(d, 0), 900 * time.Millisecond, 900 * time.Millisecond},
		{"spread mid", spread(d, 0.5), d, d},
		{"spread high", spread(d, 0.999999), 1099 * time.Millisecond, 1100 * time.Millisecond},
		{"half low", halfJitter(d, 0), 500 * time.Millisecond, 500 * time.Millisecond},
		{"half high", halfJitter(d, 0.999999), 999 * time.Millisecond, d},
	}
	for _, tt := range tests {
		if tt.got < tt.lo || tt.got > tt.hi {
			t.Errorf("%s = %s, want in [%s, %s]", tt.name, tt.got, tt.lo, tt.hi)
		}
	}
}

// TestRefreshIsJittered starts two clients at the same instant against a
// real server, one drawing the lowest jitter and one the highest: their
// background refreshes come ≈ 20 % of the interval apart (300 ms) instead
// of together.
func TestRefreshIsJittered(t *testing.T) {
	k := testenv.NewKey(t, "k1", jwa.EdDSA)
	body, _ := json.Marshal(map[string]any{"keys": []any{pub(t, k.Public, "k1", jwa.EdDSA, "sig")}})
	var mu sync.Mutex
	seen := map[string][]time.Time{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Query().Get("c")] = append(seen[r.URL.Query().Get("c")], time.Now())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const interval = 1500 * time.Millisecond
	for name, f := range map[string]float64{"low": 0, "high": 0.999} {
		c := New(Options{URL: srv.URL + "?c=" + name, Algs: []string{"EdDSA"}, Interval: interval, Cooldown: time.Minute,
			Timeout: 5 * time.Second, Rand: func() float64 { return f }}, slog.New(slog.NewJSONHandler(io.Discard, nil)), metrics.New())
		go c.Run(ctx)
	}
	testenv.Eventually(t, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen["low"]) < 2 || len(seen["high"]) < 2 {
			return fmt.Errorf("fetches: %d low, %d high; want two each", len(seen["low"]), len(seen["high"]))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	low := seen["low"][1].Sub(seen["low"][0])
	high := seen["high"][1].Sub(seen["high"][0])
	if low < 1350*time.Millisecond || high < 1650*time.Millisecond || high-low < 100*time.Millisecond {
		t.Fatalf("refresh after %s (lowest jitter) and %s (highest): want ≈ 1.35 s and ≈ 1.65 s", low, high)
	}
}
