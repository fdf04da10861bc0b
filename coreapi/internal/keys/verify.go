package keys

import "github.com/lestrrat-go/jwx/v2/jwk"

// PublicKey returns the published key kid and its algorithm, for the one
// place coreapi verifies a token itself (introspection).
func (r *Ring) PublicKey(kid string) (key jwk.Key, alg string, ok bool) {
	for _, k := range r.cur.Load().keys {
		if k.ID == kid {
			return k.public, k.Alg, true
		}
	}
	return nil, "", false
}
