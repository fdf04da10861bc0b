package replay

import (
	"math/rand/v2"
	"testing"
)

// What the docs promise (docs/identity-headers.md, "Replays"): DefaultSize
// holds documentedRate signed requests a second with the 30 s window, and
// slotsPerLive slots for each live signature (rate × window) keep the
// share forgotten early under maxEarlyLoss.
const (
	documentedRate = 7_000
	slotsPerLive   = 5
	maxEarlyLoss   = 0.001
)

// slotsFor is the docs' sizing rule: slotsPerLive × rate × window.
func slotsFor(rate, windowMs int) int { return slotsPerLive * rate * windowMs / 1000 }

// earlyLoss drives a Cache of size slots with rate signed requests a
// second, each a random signature remembered for window ms from its
// arrival, for seconds, on the Cache's own clock (no sleeping), and returns
// the share of accepted signatures forgotten before their window ended
// (Evicted: a replay of each of them would then have been accepted).
func earlyLoss(size, rate, window, seconds int, seed uint64) float64 {
	c := New(size)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	const start = 1_700_000_000_000
	n := rate * seconds
	for i := range n {
		now := start + int64(i)*1000/int64(rate)
		c.FirstUse(Key(rng.Uint64()), now+int64(window), now)
	}
	return float64(c.Evicted()) / float64(n)
}

// TestDefaultSizeHoldsTheDocumentedRate: at the rate the docs promise for
// DefaultSize (documentedRate, with the 30 s window), under maxEarlyLoss of
// the accepted signatures are forgotten early. At 262,144 slots, 8,000 a
// second forgot 36 % of them (15 % at 6,000, 2.7 % at 4,000): a bucket of
// eight fills long before the table does.
func TestDefaultSizeHoldsTheDocumentedRate(t *testing.T) {
	t.Parallel()
	if got := earlyLoss(DefaultSize, documentedRate, 30_000, 120, 1); got > maxEarlyLoss {
		t.Fatalf("%d slots, %d requests a second for 120 s: %.3f %% forgotten early, want at most %.3f %%",
			DefaultSize, documentedRate, 100*got, 100*maxEarlyLoss)
	}
}

// TestSizingRule: slotsFor(rate, window) slots keep the early loss under
// maxEarlyLoss at that rate, whatever the size (the loss depends on the
// load, live signatures per slot, only); half of them do not, so the rule
// is not wasteful by more than that.
func TestSizingRule(t *testing.T) {
	t.Parallel()
	for _, rate := range []int{500, 3_000, 25_000} {
		size := slotsFor(rate, 30_000)
		if got := earlyLoss(size, rate, 30_000, 90, 2); got > maxEarlyLoss {
			t.Errorf("rate %d, slotsFor %d: %.3f %% forgotten early, want at most %.3f %%", rate, size, 100*got, 100*maxEarlyLoss)
		}
		if got := earlyLoss(size/2, rate, 30_000, 90, 2); got <= maxEarlyLoss {
			t.Errorf("rate %d, half of slotsFor (%d): %.3f %% forgotten early; the rule asks for twice what is needed", rate, size/2, 100*got)
		}
	}
}

// TestLossByLoad (-v) prints the early loss against the load (live
// signatures per slot) that the docs' table quotes.
func TestLossByLoad(t *testing.T) {
	t.Parallel()
	if !testing.Verbose() {
		t.Skip("a table for the docs; run with -v")
	}
	for _, load := range []float64{0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 0.9} {
		rate := int(load * float64(DefaultSize) / 30)
		t.Logf("load %.2f (%d a second at %d slots): %.3f %% forgotten early", load, rate, DefaultSize, 100*earlyLoss(DefaultSize, rate, 30_000, 120, 3))
	}
}
