package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tollgate-auth/tollgate/shared/keytext"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// ParseKey decodes an HMAC key given as base64 (standard or URL alphabet,
// padded or not) text, as stored in the IDENTITY_HMAC_KEY variable or in a
// file of a mounted Secret. The key must decode to at least MinKeyLen bytes.
func ParseKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	if s == "" {
		return nil, errors.New("identity key: empty")
	}
	key, err := keytext.Decode(s)
	if err != nil {
		return nil, errors.New("identity key: not valid base64")
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("identity key: %d bytes, want at least %d", len(key), MinKeyLen)
	}
	return key, nil
}

// LoadKey returns the key from value if it is set, else from the file at
// path. It is how both services read IDENTITY_HMAC_KEY / IDENTITY_HMAC_KEY_FILE.
func LoadKey(value, path string) ([]byte, error) {
	switch {
	case value != "" && path != "":
		return nil, errors.New("identity key: set either the key or the key file, not both")
	case value != "":
		return ParseKey(value)
	case path != "":
		b, err := secretfile.Read(path)
		if err != nil {
			return nil, fmt.Errorf("identity key: %w", err)
		}
		return ParseKey(string(b))
	}
	return nil, errors.New("identity key: not configured")
}
