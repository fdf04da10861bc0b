package jwtclaims

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// ErrMemberName is the error of DecodePayload given a claims set that
// names a member twice, or names a claim the verifiers read in another
// letter case ("SUB", "Sub", "ſub" for sub).
var ErrMemberName = errors.New("jwt: member name repeated or not in its exact case")

// payloadNames and headerNames are the JSON names of Payload's and
// Header's fields (TestMemberListsMatchTags keeps them so).
var (
	payloadNames = []string{"iss", "aud", "sub", "tid", "sid", "jti", "tv", "exp", "nbf", "iat", "amr", "auth_time", "principal", "client_id", "csid", "scope"}
	headerNames  = []string{"alg", "kid", "typ", "crit", "b64", "jku", "jwk", "x5u", "x5c"}
)

// MaxKnownNames is how many names CheckMemberNames takes as known.
const MaxKnownNames = 64

// errTooManyNames: CheckMemberNames was given more than MaxKnownNames.
var errTooManyNames = errors.New("jwt: more known member names than checkMembers counts")

// CheckMemberNames checks the top-level member names of obj, a JSON object
// that json.Unmarshal has accepted, as DecodePayload checks a token's
// claims (see checkMembers): each name appears once, and a name that
// encoding/json would match to one of known (the names its reader
// decodes, at most MaxKnownNames) in another letter case or with Unicode
// folding is refused. It is for the claims of tokens other than the
// access tokens Payload describes, such as an identity provider's ID
// token; the error is ErrMemberName.
func CheckMemberNames(obj []byte, known []string) error {
	if len(known) > MaxKnownNames {
		return errTooManyNames
	}
	return checkMembers(obj, known)
}

// smallObject is how many unknown member names checkMembers compares
// pairwise before it keeps them in a map: a token's claims and header
// hold few, and an unverified header of thousands of members costs no
// more than its length. Known names are counted in a bit set.
const smallObject = 16

// checkMembers checks the top-level member names of obj, one JSON object
// that json.Unmarshal has just accepted: each name appears once (RFC 7515
// section 4 and RFC 7519 section 4 allow refusing a repeat, and
// encoding/json let the last one win where other parsers take the first),
// and a name that encoding/json would match to one of known (in any
// letter case, with Unicode folding) is that name exactly. Names are
// compared as decoded, so "\u0073ub" is sub. Nested objects are not
// looked into: no verifier reads a member of one. known has at most 64
// names.
func checkMembers(obj []byte, known []string) error {
	var (
		small [smallObject][]byte
		other = small[:0] // names not in known
		many  map[string]struct{}
		seen  uint64 // known names met, by index
	)
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return ErrMemberName
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		end := stringEnd(obj, i)
		if end < 0 {
			return ErrMemberName
		}
		name := obj[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(obj[i:end], &s); err != nil {
				return ErrMemberName
			}
			name = []byte(s)
		}
		switch k := knownIndex(name, known); {
		case k >= 0:
			if seen&(1<<k) != 0 {
				return ErrMemberName
			}
			seen |= 1 << k
		case k == foldsToKnown:
			return ErrMemberName
		case many != nil:
			if _, dup := many[string(name)]; dup {
				return ErrMemberName
			}
			many[string(name)] = struct{}{}
		case len(other) < smallObject:
			for _, n := range other {
				if bytes.Equal(n, name) {
					return ErrMemberName
				}
			}
			other = append(other, name)
		default:
			many = make(map[string]struct{}, 2*smallObject)
			for _, n := range other {
				many[string(n)] = struct{}{}
			}
			if _, dup := many[string(name)]; dup {
				return ErrMemberName
			}
			many[string(name)] = struct{}{}
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return ErrMemberName
		}
		i = skipSpace(obj, skipValue(obj, skipSpace(obj, i+1)))
		if i >= len(obj) {
			return ErrMemberName
		}
		if obj[i] == '}' {
			return nil
		}
		i = skipSpace(obj, i+1) // the ','
	}
	return ErrMemberName
}

// Results of knownIndex besides an index.
const (
	unknownName  = -1
	foldsToKnown = -2
)

// knownIndex returns the index of name in known; foldsToKnown when it is
// none of them but matches one in another letter case (as encoding/json
// matches names); unknownName otherwise.
func knownIndex(name []byte, known []string) int {
	for i, k := range known {
		if len(k) == len(name) && k[0] == name[0] && string(name) == k {
			return i
		}
	}
	for _, k := range known {
		if strings.EqualFold(string(name), k) {
			return foldsToKnown
		}
	}
	return unknownName
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at
// b[i] (a '"'), or -1.
func stringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i]
// (len(b) when it runs off the end).
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		if e := stringEnd(b, i); e >= 0 {
			return e
		}
		return len(b)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e := stringEnd(b, i)
				if e < 0 {
					return len(b)
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
