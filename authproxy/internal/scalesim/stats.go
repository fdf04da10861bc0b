package scalesim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Summary is the distribution of a set of durations.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarize sorts d (in place) and returns its nearest-rank percentiles.
func Summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(float64(len(d))*p+0.999999) - 1 // ceil(p·n) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	return Summary{N: len(d), P50: rank(0.50), P99: rank(0.99), Max: d[len(d)-1]}
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
