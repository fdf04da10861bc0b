package scalesim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Summary is the distribution of a set of durations, some of which may
// never have ended (Missing): a delivery never applied, a proxy never
// warm. Those rank above every measured value, so a percentile that falls
// among them is Unreached, not the largest value that was measured.
type Summary struct {
	N             int // values measured
	Missing       int // values that never came
	P50, P99, Max time.Duration
}

// Unreached is a percentile that falls among the values that never came.
const Unreached time.Duration = -1

// Summarize sorts d (in place) and returns its nearest-rank percentiles.
func Summarize(d []time.Duration) Summary { return SummarizeMissing(d, 0) }

// SummarizeMissing is Summarize of d and of missing more values that never
// came, each larger than any of d: the percentiles are ranked over all
// len(d)+missing, and those ranked among the missing are Unreached (Max
// too when any is missing).
func SummarizeMissing(d []time.Duration, missing int) Summary {
	missing = max(missing, 0)
	n := len(d) + missing
	if n == 0 {
		return Summary{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := max(0, min(int(float64(n)*p+0.999999)-1, n-1)) // ceil(p·n) - 1
		if i >= len(d) {
			return Unreached
		}
		return d[i]
	}
	s := Summary{N: len(d), Missing: missing, P50: rank(0.50), P99: rank(0.99), Max: Unreached}
	if missing == 0 {
		s.Max = d[len(d)-1]
	}
	return s
}

// seqPrefix starts the user ids of measured events; the last 12 hex
// digits carry the event's sequence number, so every subscriber finds its
// publish time without a lookup table keyed by string.
const seqPrefix = "00000000-0000-4000-8000-"

// seqUserID is the user id (UUID-shaped, like coreapi's) of event seq.
func seqUserID(seq int) string { return fmt.Sprintf("%s%012x", seqPrefix, seq) }

// parseSeq is seqUserID's inverse; ok is false for any other id.
func parseSeq(id string) (int, bool) {
	hex, ok := strings.CutPrefix(id, seqPrefix)
	if !ok || len(hex) != 12 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 48)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

// ms renders a duration in milliseconds with two decimals.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}

// pct renders a percentile of a Summary: ms, or never when it was not
// reached.
func pct(d time.Duration, never string) string {
	if d == Unreached {
		return never
	}
	return ms(d)
}
