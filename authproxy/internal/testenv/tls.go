package testenv

import (
	"crypto/tls"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/testca"
)

// NewTLSApp is NewApp serving https on 127.0.0.1 with a certificate of a
// fresh authority, whose certificate it returns as PEM (what a proxy that
// is to trust the app is given).
func NewTLSApp(t testing.TB) (*Core, []byte) {
	t.Helper()
	ca := testca.New(t, "app test CA")
	leaf := ca.Issue(t, "127.0.0.1")
	return newCoreTLS(t, AppKey, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}), ca.PEM
}

// NewTLSCore is NewCore serving https on 127.0.0.1 with a certificate ca
// issued for that address (what an https:// IDENTITY_URL reaches).
func NewTLSCore(t testing.TB, ca *testca.CA) *Core {
	t.Helper()
	leaf := ca.Issue(t, "127.0.0.1")
	return newCoreTLS(t, CoreKey, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12})
}

// NewTLSCoreIPv6 is NewTLSCore on [::1], its certificate issued for ::1;
// the test is skipped where there is no IPv6 loopback.
func NewTLSCoreIPv6(t testing.TB, ca *testca.CA) *Core {
	t.Helper()
	ln := listenIPv6(t)
	leaf := ca.Issue(t, "::1")
	return newCoreOn(t, CoreKey, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}, ln)
}
