// Package jwtclaims reads the registered JWT claims whose JSON shape varies
// (RFC 7519 §4.1): the proxy's access-token verifier and coreapi's
// service-account token verifier read them the same way.
package jwtclaims

import (
	"encoding/json"
	"math"
	"slices"
)

// NumericDate returns a NumericDate claim (exp, nbf, iat) in whole
// seconds; false when it is absent, not a number, not positive, or
// implausibly far in the future.
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

// HasAudience reports whether the aud claim raw (one string or an array of
// them) names want.
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
