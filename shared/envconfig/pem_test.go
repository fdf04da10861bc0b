package envconfig_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/testca"
)

// AppendCertificates takes a CA file only if every PEM block in it is a
// certificate that parses: x509.CertPool.AppendCertsFromPEM took a bundle
// with one good certificate whatever else it held (a damaged certificate,
// a private key), and the certificate lost that way failed every TLS
// handshake with the server it vouched for, long after the start.
func TestAppendCertificates(t *testing.T) {
	a, b := testca.New(t, "A"), testca.New(t, "B")
	leafB := b.Issue(t, "b.internal")
	// A line of B's base64 lost in a copy: a block of DER that does not
	// parse. A character that is no base64: no PEM block at all.
	lines := strings.Split(string(b.PEM), "\n")
	lostLine := []byte(strings.Join(append(lines[:2:2], lines[3:]...), "\n"))
	damaged := bytes.Replace(b.PEM, []byte("\n"), []byte("\n!"), 2)
	noEnd := bytes.TrimSuffix(bytes.TrimSpace(b.PEM), []byte("-----END CERTIFICATE-----"))
	key := []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n")
	badDER := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"empty", "no PEM certificate", nil},
		{"text", "no PEM certificate", []byte("not a certificate")},
		{"a certificate short of a line after a good one", "PEM block 2: not a certificate", join(a.PEM, lostLine)},
		{"a certificate short of a line before a good one", "PEM block 1: not a certificate", join(lostLine, a.PEM)},
		{"a damaged certificate after a good one", "1 of its 2 PEM blocks do not decode", join(a.PEM, damaged)},
		{"a damaged certificate before a good one", "1 of its 2 PEM blocks do not decode", join(damaged, a.PEM)},
		{"no END line", "do not decode", join(a.PEM, noEnd)},
		{"a private key", `"PRIVATE KEY"`, join(a.PEM, key)},
		{"DER that is no certificate", "PEM block 2: not a certificate", join(a.PEM, badDER)},
	} {
		pool := x509.NewCertPool()
		err := envconfig.AppendCertificates(pool, tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
		if !pool.Equal(x509.NewCertPool()) {
			t.Errorf("%s: certificates added to the pool though the file is refused", tc.name)
		}
		if strings.Contains(fmtErr(err), "MC4CAQ") {
			t.Errorf("%s: the error quotes the file: %v", tc.name, err)
		}
	}
	// Comments between blocks, as ca-certificates bundles have, are fine;
	// so are CRLF line ends and a UTF-8 byte order mark before the first
	// block (which pem.Decode alone skipped, with the block after it).
	bundle := join([]byte("# Issuer: CN=A\n"), a.PEM, []byte("subject=CN = B\n"), b.PEM)
	leafA := a.Issue(t, "a.internal")
	for name, data := range map[string][]byte{
		"with comments": bundle,
		"with CRLF":     bytes.ReplaceAll(bundle, []byte("\n"), []byte("\r\n")),
		"after a BOM":   append([]byte("\xef\xbb\xbf"), join(a.PEM, b.PEM)...),
	} {
		pool := x509.NewCertPool()
		if err := envconfig.AppendCertificates(pool, data); err != nil {
			t.Fatalf("a bundle of two certificates %s: %v", name, err)
		}
		for _, leaf := range []*testca.Leaf{leafA, leafB} {
			if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: leaf.Cert.DNSNames[0]}); err != nil {
				t.Fatalf("a bundle %s: a certificate of it is not in the pool: %v", name, err)
			}
		}
	}
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, []byte("\n")) }

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestAppendCertificatesWholeButRefusedByGo: a bundle of a distribution
// (Debian 11's ca-certificates.crt among them) holds a root whose serial
// number is negative (EC-ACC), which x509.ParseCertificate refuses since
// Go 1.23. The certificate is whole, not damaged: it is skipped, as
// AppendCertsFromPEM skips it, and the bundle's others are taken.
func TestAppendCertificatesWholeButRefusedByGo(t *testing.T) {
	a, b := testca.New(t, "A"), testca.New(t, "B")
	leafA, leafB := a.Issue(t, "a.internal"), b.Issue(t, "b.internal")
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x7e), Subject: pkix.Name{CommonName: "negative"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	// The serial 0x7e (02 01 7e, after the version) made -2 (02 01 fe):
	// the same length, so the DER stays whole.
	neg := bytes.Replace(der, []byte{0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x7e}, []byte{0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0xfe}, 1)
	if bytes.Equal(neg, der) {
		t.Fatal("no serial 0x7e to change")
	}
	if _, err := x509.ParseCertificate(neg); err == nil || !strings.Contains(err.Error(), "negative serial") {
		t.Fatalf("ParseCertificate of a negative serial: %v, want it refused", err)
	}
	negPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: neg})
	pool := x509.NewCertPool()
	if err := envconfig.AppendCertificates(pool, join(a.PEM, negPEM, b.PEM)); err != nil {
		t.Fatalf("a bundle with a whole certificate of a negative serial: %v", err)
	}
	if _, err := leafA.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "a.internal"}); err != nil {
		t.Errorf("the first certificate is not in the pool: %v", err)
	}
	if _, err := leafB.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "b.internal"}); err != nil {
		t.Errorf("the last certificate is not in the pool: %v", err)
	}
	// Alone, it is no certificate the file could be used for.
	if err := envconfig.AppendCertificates(x509.NewCertPool(), negPEM); err == nil {
		t.Error("a file of only a certificate Go refuses is taken")
	}
}
