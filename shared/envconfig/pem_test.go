package envconfig_test

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"

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
