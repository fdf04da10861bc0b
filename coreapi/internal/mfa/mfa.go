// Package mfa holds the primitives of coreapi's second factor: TOTP
// secrets sealed at rest under a rotating list of AES-256-GCM keys, code
// checks that report which time step matched (so a code is accepted once),
// recovery codes and their hashes, and the opaque challenge tokens of a
// sign-in waiting for its second factor. Storage and HTTP live in
// internal/auth.
package mfa

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/tollgate-auth/tollgate/shared/keytext"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// Period is the TOTP time step; Skew the steps accepted either side of now.
const (
	Period = 30
	Skew   = 1
)

// RecoveryCodes is how many recovery codes a confirmation hands out.
const RecoveryCodes = 10

// Errors of the sealer.
var (
	ErrUnknownKey = errors.New("mfa: secret sealed under a key that is not configured")
	ErrOpen       = errors.New("mfa: sealed secret does not open")
)

// Key is one AES-256 key of MFA_ENCRYPTION_KEYS.
type Key struct {
	ID     string
	Secret []byte // 32 bytes
}

var keyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseKeys reads "id:base64[,id:base64...]" (commas, spaces or newlines
// between entries); every secret, base64 in either alphabet, padded or not
// (keytext), must decode to 32 bytes.
func ParseKeys(text string) ([]Key, error) {
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
	if len(fields) == 0 {
		return nil, errors.New("mfa keys: empty")
	}
	keys := make([]Key, 0, len(fields))
	seen := map[string]bool{}
	for i, f := range fields {
		id, secret, ok := strings.Cut(f, ":")
		if !ok || !keyID.MatchString(id) {
			return nil, fmt.Errorf("mfa keys: entry %d: want id:base64 with an id of [A-Za-z0-9._-]", i+1)
		}
		if seen[id] {
			return nil, fmt.Errorf("mfa keys: entry %d: key id listed twice", i+1)
		}
		seen[id] = true
		b, err := keytext.Decode(secret)
		if err != nil {
			return nil, fmt.Errorf("mfa keys: entry %d: not base64", i+1)
		}
		if len(b) != 32 {
			return nil, fmt.Errorf("mfa keys: entry %d: %d bytes, want 32 (AES-256)", i+1, len(b))
		}
		keys = append(keys, Key{ID: id, Secret: b})
	}
	return keys, nil
}

// LoadKeys returns the key list from value if set, else from the file at
// path; neither set is (nil, nil): MFA is then not available.
func LoadKeys(value, path string) ([]Key, error) {
	switch {
	case value != "" && path != "":
		return nil, errors.New("mfa keys: set either the keys or the keys file, not both")
	case value != "":
		return ParseKeys(value)
	case path != "":
		b, err := secretfile.Read(path)
		if err != nil {
			return nil, fmt.Errorf("mfa keys: %w", err)
		}
		return ParseKeys(string(b))
	}
	return nil, nil
}

// Sealer encrypts TOTP secrets with the first key and opens them with any.
type Sealer struct {
	first string
	aeads map[string]cipher.AEAD
}

// NewSealer returns a Sealer over keys (at least one).
func NewSealer(keys []Key) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("mfa: no encryption key")
	}
	s := &Sealer{first: keys[0].ID, aeads: make(map[string]cipher.AEAD, len(keys))}
	for i, k := range keys {
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("mfa key %d: %w", i+1, err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("mfa key %d: %w", i+1, err)
		}
		s.aeads[k.ID] = gcm
	}
	return s, nil
}

// Seal encrypts plain under the first key; aad binds the ciphertext to its
// owner (the user id), so a sealed secret cannot be moved to another row.
func (s *Sealer) Seal(plain, aad []byte) (keyID string, sealed []byte, err error) {
	a := s.aeads[s.first]
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plain)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("read random: %w", err)
	}
	return s.first, a.Seal(nonce, nonce, plain, aad), nil
}

// Open decrypts what Seal returned under keyID.
func (s *Sealer) Open(keyID string, sealed, aad []byte) ([]byte, error) {
	a, ok := s.aeads[keyID]
	if !ok {
		return nil, ErrUnknownKey
	}
	if len(sealed) < a.NonceSize() {
		return nil, ErrOpen
	}
	plain, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Current reports whether keyID is the key Seal uses now (a secret under
// another one is resealed when next touched).
func (s *Sealer) Current(keyID string) bool { return keyID == s.first }

// KeyID is the id of the key Seal uses (the first listed).
func (s *Sealer) KeyID() string { return s.first }

// NewSecret generates a TOTP secret (160 bits, base32 without padding) and
// its otpauth:// URI.
func NewSecret(issuer, account string) (secret, uri string, err error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: account, Period: Period,
		SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", fmt.Errorf("generate totp secret: %w", err)
	}
	return k.Secret(), k.URL(), nil
}

// opts are the TOTP parameters of every factor.
func opts() totp.ValidateOpts {
	return totp.ValidateOpts{Period: Period, Skew: 0, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
}

// Step is the TOTP time step of t.
func Step(t time.Time) int64 { return t.Unix() / Period }

// Match returns the time step (within ±Skew of now) whose code is code, or
// false. The caller must still refuse a step it has accepted before.
func Match(secret, code string, now time.Time) (int64, bool) {
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return 0, false
	}
	cur := Step(now)
	found, step := false, int64(0)
	// Every candidate is computed and compared in constant time.
	for d := int64(-Skew); d <= Skew; d++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix((cur+d)*Period, 0), opts())
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !found {
			found, step = true, cur+d
		}
	}
	return step, found
}

// Code is the TOTP code of secret at t (tests and tools compute codes the
// way an authenticator app does).
func Code(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, opts())
}

var recoveryEnc = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// NewRecoveryCodes returns n fresh codes "xxxxx-xxxxx" (50 bits each).
func NewRecoveryCodes(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		var b [7]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("read random: %w", err)
		}
		s := recoveryEnc.EncodeToString(b[:])[:10]
		out[i] = s[:5] + "-" + s[5:]
	}
	return out, nil
}

// NormalizeRecovery is the form a recovery code is hashed in: lower case,
// no separators or spaces.
func NormalizeRecovery(code string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return r
	}, code)
}

// HashRecovery is the stored form of userID's recovery code: SHA-256 of
// the code with the account's id, so that one guess tests one account's
// codes, not every account's. With the code alone (LegacyHashRecovery),
// whoever read the table tested each guess against all the codes stored
// at once: with ten codes of 50 bits per account, a million accounts' put
// a code within some 2^26 guesses.
func HashRecovery(userID, code string) []byte {
	sum := sha256.Sum256([]byte("recovery-v2\x00" + strings.ToLower(userID) + "\x00" + NormalizeRecovery(code)))
	return sum[:]
}

// LegacyHashRecovery is the form in which earlier releases stored a
// recovery code (the code alone): such codes are still taken until used
// or replaced by new ones.
func LegacyHashRecovery(code string) []byte {
	sum := sha256.Sum256([]byte("recovery\x00" + NormalizeRecovery(code)))
	return sum[:]
}

// LooksLikeRecovery reports whether code has a recovery code's shape
// (rather than a TOTP code's).
func LooksLikeRecovery(code string) bool { return len(NormalizeRecovery(code)) == 10 }

// NewToken returns an opaque challenge token and the hash to store.
func NewToken() (string, []byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, fmt.Errorf("read random: %w", err)
	}
	tok := "mfa_" + base64.RawURLEncoding.EncodeToString(b[:])
	return tok, HashToken(tok), nil
}

// HashToken is the stored form of a challenge token.
func HashToken(tok string) []byte {
	sum := sha256.Sum256([]byte(tok))
	return sum[:]
}
