package invalidation

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// KeySetDigest names the keys of a JWKS document, whatever the order of
// its keys or of their members and its white space: the SHA-256 (hex) of
// its keys, each re-encoded with its members sorted, sorted. Two documents
// with one digest hold the same keys, each with the same members (kid,
// alg, use, key material).
func KeySetDigest(jwks []byte) (string, error) {
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil {
		return "", fmt.Errorf("key set digest: %w", err)
	}
	if doc.Keys == nil {
		return "", errors.New(`key set digest: no "keys" array`)
	}
	keys := make([]string, len(doc.Keys))
	for i, k := range doc.Keys {
		b, err := json.Marshal(k) // map keys sorted
		if err != nil {
			return "", fmt.Errorf("key set digest: %w", err)
		}
		keys[i] = string(b)
	}
	sort.Strings(keys)
	sum := sha256.Sum256([]byte(strings.Join(keys, "\n")))
	return hex.EncodeToString(sum[:]), nil
}
