// Package password hashes and verifies passwords with argon2id (OWASP
// parameters: 19 MiB memory, 2 passes, 1 lane) in the PHC string format
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
//
// Passwords are hashed in Unicode NFKC (NIST SP 800-63B): one password
// typed with precomposed or decomposed letters ("é" as U+00E9 or as "e" +
// U+0301, as keyboards and operating systems differ), or in full-width
// forms by an input method, is one password.
//
// Hashing is deliberately expensive in memory and CPU, so a Hasher bounds
// how many hashes run at once, and rejects over-long input before doing any
// work.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// Limits on a password, in bytes and characters.
const (
	MaxBytes = 1024
	MinChars = 8
)

// Errors.
var (
	// ErrTooLong means a password longer than MaxBytes; it is refused
	// before hashing.
	ErrTooLong = fmt.Errorf("password must be at most %d bytes", MaxBytes)
	// ErrTooShort means a new password of fewer than MinChars characters.
	ErrTooShort = fmt.Errorf("password must be at least %d characters", MinChars)
	// ErrBlank means a new password made only of white space: eight
	// spaces count as eight characters but are the first thing guessed
	// after the common list.
	ErrBlank = errors.New("password must not be only white space")
	// ErrCommon means a new password that is among the most common ones.
	ErrCommon = errors.New("password is too common (it appears in lists of breached passwords); choose another")
	// ErrInvalidHash means a stored hash that is not a valid argon2id PHC string.
	ErrInvalidHash = errors.New("invalid password hash")
	// ErrBusy means every hash slot is taken and MaxWaitingPerSlot checks
	// per slot already wait for one: the password was not looked at, and
	// the caller should answer 503 with Retry-After.
	ErrBusy = errors.New("too many passwords being checked")
)

// MaxWaitingPerSlot bounds the hashes and checks waiting for a slot, per
// slot: each holds its request (a body of up to MAX_BODY_BYTES) and its
// goroutine while it waits, and the connections that can bring them grow
// with every proxy that forwards sign-ins to the replica. At a few tens of
// ms a hash, 32 a slot wait about a second at most.
const MaxWaitingPerSlot = 32

// Params are argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	SaltLen uint32
	KeyLen  uint32
}

// OWASP returns the OWASP Password Storage Cheat Sheet's first argon2id
// choice (a function: a package-level value any caller could change).
func OWASP() Params { return Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32} }

// Hasher hashes and verifies passwords, at most a bounded number at once.
type Hasher struct {
	p     Params
	sem   chan struct{}
	dummy func() string
	// waiting counts the callers waiting for a slot (acquire), at most
	// maxWaiting.
	waiting    atomic.Int64
	maxWaiting int64
	// admitted counts the checks Admit let begin, at most maxAdmitted.
	admitted    atomic.Int64
	maxAdmitted int64
	// made counts the hashes Hash made.
	made atomic.Int64
	// derived counts the argon2 runs of Hash and Verify, and work their
	// memory × passes (KiB × t).
	derived atomic.Int64
	work    atomic.Int64
	// stored are the parameter sets of the stored hashes (SetStored), the
	// Hasher's own first, each with a salt for its dummy runs; nil until
	// SetStored.
	stored atomic.Pointer[[]storedParams]
}

// storedParams is one parameter set of the stored hashes and the salt of
// its dummy runs.
type storedParams struct {
	p    Params
	salt []byte
}

// New returns a Hasher using p that runs at most concurrency hashes at once
// (0 means GOMAXPROCS): with 19 MiB per hash, an unbounded burst of logins
// would otherwise exhaust memory. At most MaxWaitingPerSlot × concurrency
// more wait for a slot; beyond them a hash or check is refused with
// ErrBusy.
func New(p Params, concurrency int) *Hasher {
	if concurrency <= 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	return &Hasher{p: p, sem: make(chan struct{}, concurrency), maxWaiting: int64(MaxWaitingPerSlot * concurrency),
		maxAdmitted: int64((1 + MaxWaitingPerSlot) * concurrency), dummy: sync.OnceValue(func() string {
			// A hash of a random password with the same parameters: verifying
			// against it costs what verifying a real account does.
			var rnd [32]byte
			_, _ = rand.Read(rnd[:])
			return encode(p, rnd[:16], argon2.IDKey(rnd[16:], rnd[:16], p.Time, p.Memory, p.Threads, p.KeyLen))
		})}
}

// SetStored tells h the parameters of the hashes stored
// (users.StoredPasswordParams), which it equalises every check against
// from then on (see VerifyForm); ps need not hold h's own. It returns the
// number of sets every check then runs, h's own included.
func (h *Hasher) SetStored(ps []Params) int {
	var stored []storedParams
	for _, p := range append([]Params{h.p}, ps...) {
		if slices.ContainsFunc(stored, func(s storedParams) bool { return sameCost(s.p, p) }) {
			continue
		}
		salt := make([]byte, max(p.SaltLen, 8))
		_, _ = rand.Read(salt)
		stored = append(stored, storedParams{p: p, salt: salt})
	}
	h.stored.Store(&stored)
	return len(stored)
}

// sameCost reports whether hashes of a and b cost one argon2 run alike.
func sameCost(a, b Params) bool {
	return a.Memory == b.Memory && a.Time == b.Time && a.Threads == b.Threads
}

// ParamsOf returns the parameters a PHC string encoded was made with;
// one that does not parse is ErrInvalidHash.
func ParamsOf(encoded string) (Params, error) {
	p, _, _, err := decode(encoded)
	return p, err
}

// Params returns the parameters new hashes use.
func (h *Hasher) Params() Params { return h.p }

// CheckNew validates a password a user is choosing (NIST SP 800-63B): at
// most MaxBytes bytes as sent, and in NFKC (as it is hashed) at least
// MinChars characters, not only white space (unicode.IsSpace) and not
// among the most common passwords (case-insensitively). A password is
// never trimmed: white space around other characters is part of it.
// Passwords already set are never checked again, so nobody is locked out
// by a policy change.
func CheckNew(pw string) error {
	if len(pw) > MaxBytes {
		return ErrTooLong
	}
	pw = norm.NFKC.String(pw)
	if utf8.RuneCountInString(pw) < MinChars {
		return ErrTooShort
	}
	if strings.TrimFunc(pw, unicode.IsSpace) == "" {
		return ErrBlank
	}
	if _, ok := common[strings.ToLower(pw)]; ok {
		return ErrCommon
	}
	return nil
}

//go:embed common.txt
var commonText string

// common is the set of common passwords, lower-cased.
var common = func() map[string]struct{} {
	m := map[string]struct{}{}
	for _, line := range strings.Split(commonText, "\n") {
		line = strings.ToLower(strings.TrimSpace(line))
		if line != "" && !strings.HasPrefix(line, "#") {
			m[line] = struct{}{}
		}
	}
	return m
}()

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	default:
	}
	if h.waiting.Add(1) > h.maxWaiting {
		h.waiting.Add(-1)
		return ErrBusy
	}
	defer h.waiting.Add(-1)
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for hash slot: %w", ctx.Err())
	}
}

func (h *Hasher) release() { <-h.sem }

// Admit takes a place for a password check about to begin: the work
// before its hash (rate limits reserved, the stored hash loaded) waits
// for the database as the hash waits for a slot, and a flood of checks
// would pile up there instead. At most as many checks as there are slots
// and places to wait for them (MaxWaitingPerSlot a slot) are admitted at
// once; beyond them Admit answers ErrBusy, before any of the check's
// work. done gives the place back; call it once, when the check ends.
func (h *Hasher) Admit() (done func(), err error) {
	if h.admitted.Add(1) > h.maxAdmitted {
		h.admitted.Add(-1)
		return nil, ErrBusy
	}
	return func() { h.admitted.Add(-1) }, nil
}

// Hash returns the PHC string of pw, in NFKC, with a fresh random salt.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if len(pw) > MaxBytes {
		return "", ErrTooLong
	}
	pw = norm.NFKC.String(pw)
	salt := make([]byte, h.p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, h.p.Time, h.p.Memory, h.p.Threads, h.p.KeyLen)
	h.release()
	h.made.Add(1)
	h.derived.Add(1)
	h.work.Add(int64(h.p.Memory) * int64(h.p.Time))
	return encode(h.p, salt, key), nil
}

// Made is the number of hashes Hash has made (Verify's not counted): what
// a route that must refuse before hashing can be held to.
func (h *Hasher) Made() int64 { return h.made.Load() }

// Derivations is the number of argon2 runs Hash and Verify have made: the
// cost a password check puts on the hashing slots.
func (h *Hasher) Derivations() int64 { return h.derived.Load() }

// Work is the argon2 work Hash and Verify have done: the sum over their
// runs of memory (KiB) × passes, what a run's time follows.
func (h *Hasher) Work() int64 { return h.work.Load() }

// A Form is what the caller knows of the form of the password a stored
// hash holds.
type Form uint8

const (
	// FormUnknown: the hash may be from before passwords were normalized,
	// and hold the password as typed; Verify accepts either form.
	FormUnknown Form = iota
	// FormNFKC: the hash is known to hold the password's NFKC form (Hash
	// made it, or a check matched that form); only a match of that form
	// is accepted.
	FormNFKC
)

// A Match is Verify's answer: which form of the password, if any, the
// stored hash holds.
type Match uint8

const (
	// NoMatch: neither form (or no hash, or a dummy).
	NoMatch Match = iota
	// MatchNFKC: the password in NFKC, as Hash stores it.
	MatchNFKC
	// MatchAsTyped: the password as typed, which NFKC changes: a hash
	// stored before passwords were normalized. The caller, now knowing the
	// password, should store Hash(pw) in its place (see NeedsRehash), so
	// the next check matches the NFKC form.
	MatchAsTyped
)

// OK reports whether the password is correct.
func (m Match) OK() bool { return m != NoMatch }

func (m Match) String() string {
	switch m {
	case MatchNFKC:
		return "match (NFKC)"
	case MatchAsTyped:
		return "match (as typed)"
	}
	return "no match"
}

// Verify reports whether pw matches the PHC string encoded, a hash of
// unknown form (VerifyForm with FormUnknown).
func (h *Hasher) Verify(ctx context.Context, pw, encoded string) (Match, error) {
	return h.VerifyForm(ctx, pw, encoded, FormUnknown)
}

// VerifyForm reports whether pw matches the PHC string encoded, and in
// which form. An empty encoded (unknown account, or one without a
// password) is checked against a dummy hash so it costs what an
// account's does and never matches; so is one that does not parse, which
// is ErrInvalidHash.
//
// pw is compared in NFKC, as Hash stores it. A hash stored before
// passwords were normalized holds the password as it was typed then: with
// FormUnknown, when NFKC changes pw, a match of pw as typed counts too.
// Such a match is MatchAsTyped, for the caller to replace the hash; a
// MatchNFKC tells the caller it may pass FormNFKC for this hash from then
// on. The cost depends on pw alone: when NFKC changes pw, the form as
// typed is derived too whatever f and whether there is a hash, two
// derivations (one when NFKC keeps pw), so the time a check takes tells
// nobody whether the address has an account, or one whose hash predates
// normalization; with FormNFKC or the dummy, that second one's answer is
// not looked at.
//
// Nor does it tell the parameters of the account's hash. A hash made with
// older parameters (until a sign-in replaces it, NeedsRehash) costs
// another time than the dummy, which has the current ones: each
// derivation is one argon2 run with each parameter set of the stored
// hashes (SetStored), the hash's own set giving the answer, the others
// run on a dummy salt. Every check then costs what one with every stored
// set costs, an unknown address's too. A hash whose set SetStored was not
// told of costs one run more.
func (h *Hasher) VerifyForm(ctx context.Context, pw, encoded string, f Form) (Match, error) {
	if len(pw) > MaxBytes {
		return NoMatch, ErrTooLong
	}
	dummy := encoded == ""
	p, salt, want, invalid := decode(encoded)
	if dummy || invalid != nil {
		p, salt, want, _ = decode(h.dummy())
	}
	nfkc := norm.NFKC.String(pw)
	if err := h.acquire(ctx); err != nil {
		return NoMatch, err
	}
	var stored []storedParams
	if s := h.stored.Load(); s != nil {
		stored = *s
	}
	okNFKC := subtle.ConstantTimeCompare(h.derive(nfkc, p, salt, len(want), stored), want)
	okTyped := 0
	if nfkc != pw {
		got := h.derive(pw, p, salt, len(want), stored)
		if f == FormUnknown {
			okTyped = subtle.ConstantTimeCompare(got, want)
		}
	}
	h.release()
	switch {
	case invalid != nil && !dummy:
		return NoMatch, invalid
	case dummy:
		return NoMatch, nil
	case okNFKC == 1:
		return MatchNFKC, nil
	case okTyped == 1:
		return MatchAsTyped, nil
	}
	return NoMatch, nil
}

// derive returns the argon2id key of pw with parameters p and salt, and
// runs argon2 on pw with every other parameter set of stored too, in
// their order, so that its cost does not depend on p (VerifyForm).
func (h *Hasher) derive(pw string, p Params, salt []byte, keyLen int, stored []storedParams) []byte {
	var key []byte
	run := func(q Params, salt []byte) []byte {
		h.derived.Add(1)
		h.work.Add(int64(q.Memory) * int64(q.Time))
		return argon2.IDKey([]byte(pw), salt, q.Time, q.Memory, q.Threads, uint32(keyLen))
	}
	for _, s := range stored {
		if key == nil && sameCost(s.p, p) {
			key = run(p, salt)
		} else {
			run(s.p, s.salt)
		}
	}
	if key == nil { // a set SetStored was not told of, or none told
		key = run(p, salt)
	}
	return key
}

// NeedsRehash reports whether encoded was made with other parameters than
// the Hasher's.
func (h *Hasher) NeedsRehash(encoded string) bool {
	p, salt, key, err := decode(encoded)
	if err != nil {
		return true
	}
	return p.Memory != h.p.Memory || p.Time != h.p.Time || p.Threads != h.p.Threads ||
		uint32(len(salt)) != h.p.SaltLen || uint32(len(key)) != h.p.KeyLen
}

var b64 = base64.RawStdEncoding

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// Bounds on parameters read back from storage, so a corrupt row cannot make
// one verification allocate gigabytes.
const (
	maxMemory = 1 << 20 // 1 GiB in KiB
	maxTime   = 100
)

func decode(s string) (Params, []byte, []byte, error) {
	var p Params
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, ErrInvalidHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q", ErrInvalidHash, parts[2])
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, nil, nil, ErrInvalidHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("%w: %s", ErrInvalidHash, kv)
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, ErrInvalidHash
			}
			p.Threads = uint8(n)
		default:
			return p, nil, nil, fmt.Errorf("%w: parameter %q", ErrInvalidHash, k)
		}
	}
	if p.Memory == 0 || p.Memory > maxMemory || p.Time == 0 || p.Time > maxTime || p.Threads == 0 {
		return p, nil, nil, fmt.Errorf("%w: parameters out of range", ErrInvalidHash)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return p, nil, nil, fmt.Errorf("%w: salt", ErrInvalidHash)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 {
		return p, nil, nil, fmt.Errorf("%w: key", ErrInvalidHash)
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}
