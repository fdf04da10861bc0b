// Package jwtclaims reads the registered JWT claims the same way wherever a
// token is checked: at the proxy (every request's bearer) and at coreapi's
// introspection endpoint (the one place coreapi verifies a JWT itself).
// CheckMemberNames applies its check of claim names to other tokens'
// claims, an identity provider's ID token's at the OIDC callback.
package jwtclaims

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
)

// Number is a claim that must be a JSON number: the NumericDate claims
// (exp, iat, nbf, auth_time; RFC 7519 section 2) and tv. Unlike
// json.Number, which encoding/json also fills from a string holding a
// number ("exp":"1700000000"), it refuses any other JSON value, so a token
// whose claims another verifier would read differently (or refuse) is
// malformed here too. null leaves a *Number nil, as if absent.
type Number json.Number

// ErrNotNumber is the decoding error of a Number given another JSON value.
var ErrNotNumber = errors.New("jwt: claim is not a JSON number")

// UnmarshalJSON accepts a JSON number literal only. The decoder has
// checked b is one JSON value; a number is the only one that starts with
// '-' or a digit.
func (n *Number) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return ErrNotNumber
	}
	*n = Number(b)
	return nil
}

// Int64 is json.Number's Int64.
func (n Number) Int64() (int64, error) { return json.Number(n).Int64() }

// NumericDate reads a NumericDate claim (RFC 7519 section 2): a number of
// seconds, fractions dropped, within a sane range (at least 1, so that no
// claim reads as the zero that stands for an absent one; up to about year
// 2514). false: absent or not such a number.
func NumericDate(n *Number) (int64, bool) {
	if n == nil {
		return 0, false
	}
	f, err := json.Number(*n).Float64()
	if err != nil || !(f >= 1) || f > math.MaxInt32*4 {
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

// SplitScope splits a scope claim or parameter (RFC 6749 section 3.3) into
// its tokens, separated by U+0020 only: any other space (a tab, a line
// break, NBSP) is part of a token, for the caller to refuse. Empty tokens
// (spaces repeated, leading or trailing) are skipped. The result is never
// nil: a scope present but empty (or all spaces) grants nothing, which a
// nil scope (absent) would not say.
func SplitScope(s string) []string {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && (i == 0 || s[i-1] == ' ') {
			n++
		}
	}
	out := make([]string, 0, n)
	for tok := range strings.SplitSeq(s, " ") {
		if tok != "" {
			out = append(out, tok)
		}
	}
	return out
}

// Payload is an access token's claims as the verifiers read them (the
// proxy's, for every bearer, and coreapi's introspection), decoded by
// DecodePayload. A claim absent or null leaves its pointer nil.
type Payload struct {
	Iss string          `json:"iss"`
	Aud json.RawMessage `json:"aud"`
	Sub string          `json:"sub"`
	Tid string          `json:"tid"`
	Sid string          `json:"sid"`
	Jti string          `json:"jti"`
	TV  *Number         `json:"tv"`
	Exp *Number         `json:"exp"`
	Nbf *Number         `json:"nbf"`
	Iat *Number         `json:"iat"`
	AMR []string        `json:"amr"`
	// AuthTime is the sign-in time (unix seconds), when the token says.
	AuthTime *Number `json:"auth_time"`
	// Principal is absent (a user's token) or "service".
	Principal *string `json:"principal"`
	ClientID  string  `json:"client_id"`
	// SecretID is the client secret a service token was obtained with
	// (claim csid; absent from a user's token and from service tokens
	// issued before it was added).
	SecretID string  `json:"csid"`
	Scope    *string `json:"scope"`
}

// ErrPayload is the error of DecodePayload given a payload that is not a
// JSON object.
var ErrPayload = errors.New("jwt: payload is not a JSON object")

// DecodePayload decodes a verified JWS payload into p. Numbers are kept
// as written (Number), so a NumericDate is read by NumericDate alone. The
// payload must be one JSON object (RFC 7519 section 7.2) and nothing else:
// null, which the JSON decoder takes for no claims, and a claims set
// followed by more (a second object, stray bytes) are refused, as a
// verifier that reads the whole payload would refuse them. So is a
// member named twice, or a claim named in another letter case
// (ErrMemberName, see checkMembers): encoding/json alone took "SUB" for
// sub and let the last of two win, where another JWT library reads the
// exact name, or the first.
func DecodePayload(body []byte, p *Payload) error {
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return ErrPayload
	}
	if err := json.Unmarshal(body, p); err != nil {
		return err
	}
	return checkMembers(body, payloadNames)
}

// Header is a JWS protected header as the access-token verifiers read it.
type Header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
	JKU  json.RawMessage `json:"jku"`
	JWK  json.RawMessage `json:"jwk"`
	X5U  json.RawMessage `json:"x5u"`
	X5C  json.RawMessage `json:"x5c"`
}

// Errors of ParseHeader.
var (
	// ErrMalformed: the segment is not base64url of a JSON object.
	ErrMalformed = errors.New("jwt: malformed header")
	// ErrHeaderParam: crit, b64, or a key or key URL carried in the token
	// (the verifiers take keys from their own key set only).
	ErrHeaderParam = errors.New("jwt: unsupported header parameter")
	// ErrType: typ is not at+jwt (RFC 9068), so the token is not an
	// access token (an ID token must not pass for one).
	ErrType = errors.New("jwt: not an access token (typ)")
)

// CanonicalSegment reports whether seg is a segment of a compact JWS as
// RFC 7515 section 2 spells it: base64url without padding, the unused
// bits of its last character zero, nothing else (no line break). The JWS
// library decodes the payload and signature segments in any base64
// alphabet, padded or not, their unused bits ignored, and checks the
// signature over the payload encoded again, so a token the signer wrote
// would verify in many spellings; the verifiers take the one it wrote.
func CanonicalSegment(seg []byte) bool {
	last := byte(0)
	for _, c := range seg {
		switch {
		case c >= 'A' && c <= 'Z':
			last = c - 'A'
		case c >= 'a' && c <= 'z':
			last = c - 'a' + 26
		case c >= '0' && c <= '9':
			last = c - '0' + 52
		case c == '-':
			last = 62
		case c == '_':
			last = 63
		default:
			return false
		}
	}
	switch len(seg) % 4 {
	case 1:
		return false
	case 2: // 12 bits for one byte
		return last&0x0f == 0
	case 3: // 18 bits for two bytes
		return last&0x03 == 0
	}
	return true
}

// ParseHeader decodes the first segment of a compact JWS and refuses the
// headers neither verifier accepts: a parameter named twice, or one of
// Header's in another letter case, is ErrMalformed (checkMembers), since
// the JWS library that checks the signature reads the exact name. alg and kid are the caller's to check
// against its keys.
func ParseHeader(seg []byte) (Header, error) {
	var h Header
	// The decoder skips CR and LF even when strict: a segment holding
	// them is no base64url, and would be one header in many spellings.
	if bytes.ContainsAny(seg, "\r\n") {
		return h, ErrMalformed
	}
	hb := make([]byte, base64.RawURLEncoding.DecodedLen(len(seg)))
	n, err := base64.RawURLEncoding.Strict().Decode(hb, seg)
	if err != nil {
		return h, ErrMalformed
	}
	if err := json.Unmarshal(hb[:n], &h); err != nil || checkMembers(hb[:n], headerNames) != nil {
		return h, ErrMalformed
	}
	if h.Crit != nil || h.B64 != nil || h.JKU != nil || h.JWK != nil || h.X5U != nil || h.X5C != nil {
		return h, ErrHeaderParam
	}
	if !strings.EqualFold(h.Typ, "at+jwt") && !strings.EqualFold(h.Typ, "application/at+jwt") {
		return h, ErrType
	}
	return h, nil
}
