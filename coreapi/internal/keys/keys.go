// Package keys holds the access-token signing keys: it loads them from a
// directory shaped like a mounted Kubernetes Secret (one PKCS#8 PEM file per
// key, the file name without ".pem" is the kid), generates new ones, signs
// access tokens with the newest key of the configured algorithm, and
// publishes every public key as a JWKS document.
//
// coreapi only signs; it never verifies a JWT on a request (the proxy does).
package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Supported signing algorithms.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
)

// TokenType is the JOSE "typ" header of access tokens (RFC 9068).
const TokenType = "at+jwt"

// Errors.
var (
	// ErrNoKeys means the directory holds no key usable with the configured
	// algorithm.
	ErrNoKeys = errors.New("no signing key")
	// ErrUnsupportedAlg means an algorithm other than EdDSA, ES256, RS256.
	ErrUnsupportedAlg = errors.New("unsupported signing algorithm")
)

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Key is one loaded key pair.
type Key struct {
	ID      string
	Alg     string
	private jwk.Key
	public  jwk.Key
}

// set is an immutable snapshot of the directory.
type set struct {
	keys   []*Key // sorted by kid, ascending
	signer *Key
	jwks   []byte
}

// Ring is the live key set. Reload swaps in a new snapshot atomically, so a
// rotation (a file added to or removed from the mounted Secret) takes
// effect without a restart and without a lock on the signing path.
type Ring struct {
	dir string
	alg string
	cur atomic.Pointer[set]
}

// Load reads every *.pem file of dir. The newest (lexically greatest kid)
// key whose algorithm is alg signs; every key is published.
func Load(dir, alg string) (*Ring, error) {
	if !validAlg(alg) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
	}
	r := &Ring{dir: dir, alg: alg}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the directory. On error the previous keys stay in use.
func (r *Ring) Reload() error {
	s, err := loadSet(r.dir, r.alg)
	if err != nil {
		return err
	}
	r.cur.Store(s)
	return nil
}

// SigningKeyID is the kid of the key that signs new tokens.
func (r *Ring) SigningKeyID() string { return r.cur.Load().signer.ID }

// KeyIDs lists the kids of every published key, ascending.
func (r *Ring) KeyIDs() []string {
	s := r.cur.Load()
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = k.ID
	}
	return ids
}

// JWKS is the JSON Web Key Set document: public keys only. The returned
// slice is shared: do not modify it.
func (r *Ring) JWKS() []byte { return r.cur.Load().jwks }

// Sign signs payload (a JSON claims object) as a compact JWS with header
// typ at+jwt, kid and alg of the current signing key.
func (r *Ring) Sign(payload []byte) ([]byte, error) {
	k := r.cur.Load().signer
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, TokenType); err != nil {
		return nil, fmt.Errorf("set typ: %w", err)
	}
	if err := hdr.Set(jws.KeyIDKey, k.ID); err != nil {
		return nil, fmt.Errorf("set kid: %w", err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(k.Alg), k.private, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return nil, fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func validAlg(alg string) bool {
	return alg == AlgEdDSA || alg == AlgES256 || alg == AlgRS256
}

func loadSet(dir, alg string) (*set, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	sort.Strings(paths)
	s := &set{}
	for _, p := range paths {
		k, err := loadKey(p)
		if err != nil {
			return nil, err
		}
		s.keys = append(s.keys, k)
		if k.Alg == alg {
			s.signer = k // ascending order: the last one wins
		}
	}
	if s.signer == nil {
		return nil, fmt.Errorf("%w: no %s key in %s (create one with `coreapi keys generate -dir %s -alg %s`)", ErrNoKeys, alg, dir, dir, alg)
	}
	pubs := jwk.NewSet()
	for _, k := range s.keys {
		if err := pubs.AddKey(k.public); err != nil {
			return nil, fmt.Errorf("add key %s: %w", k.ID, err)
		}
	}
	s.jwks, err = json.Marshal(pubs)
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	return s, nil
}

func loadKey(path string) (*Key, error) {
	kid := strings.TrimSuffix(filepath.Base(path), ".pem")
	if !kidPattern.MatchString(kid) {
		return nil, fmt.Errorf("key %s: file name must be [A-Za-z0-9._-]{1,128}.pem", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key %s: want a PEM \"PRIVATE KEY\" (PKCS#8) block", path)
	}
	raw, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: parse pkcs8: %w", path, err)
	}
	alg, err := algOf(raw)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		return nil, fmt.Errorf("key %s: public key: %w", path, err)
	}
	for _, k := range []jwk.Key{priv, pub} {
		for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: jwa.SignatureAlgorithm(alg), jwk.KeyUsageKey: jwk.ForSignature} {
			if err := k.Set(name, v); err != nil {
				return nil, fmt.Errorf("key %s: set %s: %w", path, name, err)
			}
		}
	}
	return &Key{ID: kid, Alg: alg, private: priv, public: pub}, nil
}

func algOf(k crypto.PrivateKey) (string, error) {
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return AlgEdDSA, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("%w: ECDSA curve %s (only P-256)", ErrUnsupportedAlg, k.Curve.Params().Name)
		}
		return AlgES256, nil
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("%w: RSA key of %d bits (at least 2048)", ErrUnsupportedAlg, k.N.BitLen())
		}
		return AlgRS256, nil
	}
	return "", fmt.Errorf("%w: key type %T", ErrUnsupportedAlg, k)
}

// Generate creates a new key of algorithm alg in dir, named
// <UTC yyyymmddThhmmssZ>-<8 hex>.pem so that the newest key sorts last, and
// returns its kid. The file is written with mode 0600.
func Generate(dir, alg string, now time.Time) (string, error) {
	var (
		raw crypto.PrivateKey
		err error
	)
	switch alg {
	case AlgEdDSA:
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	case AlgES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgRS256:
		raw, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
	}
	if err != nil {
		return "", fmt.Errorf("generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("random kid suffix: %w", err)
	}
	kid := now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key dir: %w", err)
	}
	path := filepath.Join(dir, kid+".pem")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create key file: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close key file: %w", err)
	}
	return kid, nil
}

// Watch reloads the directory every interval until ctx ends, so keys added
// to or removed from a mounted Secret are picked up. A failed reload keeps
// the previous keys and is logged.
func (r *Ring) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := strings.Join(r.KeyIDs(), ",")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Reload(); err != nil {
			log.Error("reload signing keys", "err", err)
			continue
		}
		if now := strings.Join(r.KeyIDs(), ","); now != last {
			log.Info("signing keys changed", "kids", now, "signing_kid", r.SigningKeyID())
			last = now
		}
	}
}
