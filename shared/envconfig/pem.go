package envconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
)

// AppendCertificates adds the PEM certificates of data (a CA file's
// contents) to pool, or adds none and says what is wrong. Unlike
// x509.CertPool.AppendCertsFromPEM, which skips whatever it cannot use,
// every PEM block must be a whole certificate (one Go refuses to use, a
// negative serial number, is skipped as AppendCertsFromPEM skips it): a
// bundle with one damaged certificate (a line lost in a copy, a missing
// END line), or a private key pasted in, is refused at the start rather
// than loaded without it, to fail every TLS handshake with the server that
// certificate vouched for. Text between the blocks (the comments of a
// ca-certificates bundle, openssl's subject= lines) is allowed. Errors
// name a block by its place in the file, never its contents.
func AppendCertificates(pool *x509.CertPool, data []byte) error {
	// A UTF-8 byte order mark, which some editors write first, hid the
	// first block from pem.Decode (its BEGIN line no longer starts a line).
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var (
		certs  []*x509.Certificate
		rest   = data
		blocks int
	)
	for i := 1; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks++
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE: a CA file holds certificates only", i, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil && wholeCertificate(b.Bytes) {
			// Whole, but one Go refuses (a negative serial number, as
			// the EC-ACC root of older ca-certificates bundles has): it
			// could vouch for no server here, and AppendCertsFromPEM
			// skips it as well.
			continue
		}
		if err != nil {
			return fmt.Errorf("PEM block %d: not a certificate: %v", i, err)
		}
		certs = append(certs, c)
	}
	// pem.Decode skips what it cannot decode up to the next block that it
	// can: each "-----BEGIN " it did not return as a block is a damaged one.
	if begins := bytes.Count(data, []byte("-----BEGIN ")); begins != blocks {
		return fmt.Errorf("%d of its %d PEM blocks do not decode (damaged base64, a missing END line)", begins-blocks, begins)
	}
	if len(certs) == 0 {
		return errors.New("no PEM certificate in it")
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return nil
}

// wholeCertificate reports whether der is a certificate's DER structure
// (RFC 5280 section 4.1: a SEQUENCE of the to-be-signed SEQUENCE, the
// algorithm's SEQUENCE and the signature's BIT STRING), every length
// matching the bytes there are: a certificate short of a line, or with
// bytes lost or added, is not.
func wholeCertificate(der []byte) bool {
	var c struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}
	rest, err := asn1.Unmarshal(der, &c)
	if err != nil || len(rest) != 0 {
		return false
	}
	var tbs []asn1.RawValue
	if rest, err := asn1.Unmarshal(c.TBS.FullBytes, &tbs); err != nil || len(rest) != 0 || len(tbs) < 6 {
		return false
	}
	return c.TBS.Tag == asn1.TagSequence && c.Algorithm.Tag == asn1.TagSequence
}
