package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// minter signs access tokens exactly as coreapi does (EdDSA, typ at+jwt,
// kid, the DESIGN.md claims), so the harness can make any number of valid
// tokens without paying for a password login per token.
type minter struct {
	key      jwk.Key
	issuer   string
	audience string
	ttl      time.Duration
	alg      jwa.SignatureAlgorithm // "": EdDSA
}

func newMinter(issuer, audience string) (*minter, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := jwk.FromRaw(priv)
	if err != nil {
		return nil, err
	}
	_ = k.Set(jwk.KeyIDKey, "bench-"+randHex(4))
	_ = k.Set(jwk.AlgorithmKey, jwa.EdDSA)
	_ = k.Set(jwk.KeyUsageKey, "sig")
	return &minter{key: k, issuer: issuer, audience: audience, ttl: 15 * time.Minute}, nil
}

// minterFromDir loads the newest PKCS#8 key of a coreapi keys directory
// (kid = file name without .pem).
func minterFromDir(dir, issuer, audience string) (*minter, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no *.pem keys in %s", dir)
	}
	sort.Strings(files)
	newest := files[len(files)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", newest)
	}
	raw, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", newest, err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	kid := strings.TrimSuffix(filepath.Base(newest), ".pem")
	_ = k.Set(jwk.KeyIDKey, kid)
	if _, ok := raw.(ed25519.PrivateKey); !ok {
		return nil, fmt.Errorf("%s: the harness signs EdDSA only", newest)
	}
	_ = k.Set(jwk.AlgorithmKey, jwa.EdDSA)
	return &minter{key: k, issuer: issuer, audience: audience, ttl: 15 * time.Minute}, nil
}

func (m *minter) mint(sub, tid, sid string, tv int64) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer(m.issuer).
		Audience([]string{m.audience}).
		Subject(sub).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(m.ttl)).
		JwtID(randHex(16)).
		Claim("tid", tid).
		Claim("sid", sid).
		Claim("tv", tv).
		Build()
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "at+jwt")
	_ = hdr.Set(jws.KeyIDKey, m.key.KeyID())
	alg := m.alg
	if alg == "" {
		alg = jwa.EdDSA
	}
	b, err := jwt.Sign(tok, jwt.WithKey(alg, m.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// user is one principal the harness sends requests as.
type user struct{ id, tenant, session string }

// mintAll signs n tokens, token i for users[i%len(users)], on every core.
func (m *minter) mintAll(users []user, n int) ([]string, error) {
	out := make([]string, n)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	workers := 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				u := users[i%len(users)]
				t, err := m.mint(u.id, u.tenant, u.session, 0)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				out[i] = t
			}
		}(w)
	}
	wg.Wait()
	return out, firstErr
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
