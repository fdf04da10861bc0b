// Package jwtclaims reads the registered JWT claims the same way wherever a
// token is checked: at the proxy (every request's bearer) and at coreapi's
// introspection endpoint (the one place coreapi verifies a JWT itself).
package jwtclaims

import (
	"encoding/json"
	"math"
	"slices"
)

// NumericDate reads a NumericDate claim (RFC 7519 section 2): a positive
// number of seconds, fractions dropped, within a sane range (up to about
// year 2514). false: absent or not such a number.
func NumericDate(n *json.Number) (int64, bool) {
	if n == nil {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > math.MaxInt32*4 || math.IsNaN(f) {
		return 0, false
	}
	return int64(f), true
}

// HasAudience reports whether an aud claim (a string, or an array of
// strings) names want.
func HasAudience(raw json.RawMessage, want string) bool {
	if len(raw) == 0 {
		return false
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return one == want
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return false
	}
	return slices.Contains(many, want)
}
