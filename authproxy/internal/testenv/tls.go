package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/testca"
)

// SelfSigned returns a fresh self-signed certificate for the IP address
// or DNS name host, valid for an hour, and its PEM encoding (what a client
// that is to trust it is given).
func SelfSigned(t testing.TB, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// NewTLSApp is NewApp serving https on 127.0.0.1 with a fresh self-signed
// certificate, returned as PEM.
func NewTLSApp(t testing.TB) (*Core, []byte) {
	t.Helper()
	cert, pemBytes := SelfSigned(t, "127.0.0.1")
	return newCoreTLS(t, AppKey, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), pemBytes
}

// NewTLSCore is NewCore serving https on 127.0.0.1 with a certificate ca
// issued for that address (what an https:// IDENTITY_URL reaches).
func NewTLSCore(t testing.TB, ca *testca.CA) *Core {
	t.Helper()
	leaf := ca.Issue(t, "127.0.0.1")
	return newCoreTLS(t, CoreKey, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12})
}
