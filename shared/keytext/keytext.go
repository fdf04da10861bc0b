// Package keytext decodes a secret key written as text (an environment
// variable, a file of a mounted Secret): base64 in either alphabet, padded
// or not. `base64` and `openssl rand -base64` write standard padded,
// `basenc --base64url` URL padded, and tools that drop the padding either
// alphabet. No string decodes in two of them to different bytes, so the
// first that takes it is the key.
package keytext

import "encoding/base64"

// Decode returns the bytes of s in the first spelling that decodes it, or
// the last spelling's error when none does. It checks no length: that is
// the caller's, which knows what the key is for.
func Decode(s string) ([]byte, error) {
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}
