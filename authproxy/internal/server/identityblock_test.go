package server

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// The identity block written as one header's name reaches the upstream as
// the very bytes the headers set one by one do, whichever optional values
// a token has.
func TestIdentityBlockMatchesHeaders(t *testing.T) {
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	base := func() (*tokens.Claims, *identity.Projection) {
		cl := &tokens.Claims{Sub: "0193a1f2-7c4d-7e0a-9b1c-000000000001", Tid: "0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10",
			Sid: "0193a1f3-0000-7e0a-9b1c-000000000001", Exp: now + 900, Iat: now, AMR: []string{"pwd", "otp"}, AuthTime: now,
			Principal: identity.PrincipalUser}
		p := &identity.Projection{UserID: cl.Sub, TenantID: cl.Tid, Roles: []string{"member", "editor"},
			Permissions: []string{"notes:read", "notes:write"}, EmailVerified: true}
		return cl, p
	}
	cases := map[string]func(*tokens.Claims, *identity.Projection){
		"full":              func(*tokens.Claims, *identity.Projection) {},
		"no amr, auth time": func(cl *tokens.Claims, _ *identity.Projection) { cl.AMR, cl.AuthTime = nil, 0 },
		"email unverified":  func(_ *tokens.Claims, p *identity.Projection) { p.EmailVerified = false },
		"no roles":          func(_ *tokens.Claims, p *identity.Projection) { p.Roles, p.Permissions = nil, nil },
		"api key":           func(cl *tokens.Claims, _ *identity.Projection) { cl.Principal, cl.Sid = identity.PrincipalAPIKey, "" },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			cl, p := base()
			mod(cl, p)
			pe := projection.Of(p)
			w := newWarm(cl, pe).signed(cl, signer)
			if !w.lines {
				t.Fatal("warm state without line breaks not written as a block")
			}
			st := &state{ip: []byte("203.0.113.7"), ts: []byte("1764547200000"), sig: []byte("sig-value")}
			var one, block fasthttp.RequestHeader
			for _, h := range []*fasthttp.RequestHeader{&one, &block} {
				h.SetRequestURI("/notes")
				h.SetHost("app.local")
				h.Set("Accept", "application/json")
			}
			reqID := []byte("1b9b0470a89fb6d3-1")
			setForwardedOnce(&one, st.ip, "https")
			one.SetCanonical(requestIDKey, reqID)
			setIdentity(&one, signer.KeyID(), cl, w, st)
			st.hdr = forwardedLines(st.hdr[:0], st.ip, "https", block.Host(), reqID)
			st.hdr = identityBlock(st.hdr, w, st)
			block.SetCanonical(st.hdr, st.sig)
			want, got := one.AppendBytes(nil), block.AppendBytes(nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("block writes\n%q\nheaders one by one write\n%q", got, want)
			}
			// And it parses back to each header once.
			var back fasthttp.RequestHeader
			if err := back.Read(bufio.NewReader(bytes.NewReader(got))); err != nil {
				t.Fatal(err)
			}
			if v := back.Peek(identity.HeaderSignature); string(v) != "sig-value" {
				t.Fatalf("signature header %q", v)
			}
			if v := back.Peek(identity.HeaderUserID); string(v) != cl.Sub {
				t.Fatalf("user id header %q", v)
			}
			if v := back.Peek("X-Forwarded-Host"); string(v) != "app.local" {
				t.Fatalf("forwarded host header %q", v)
			}

			// On a strip_prefix route the block has one more forwarding
			// line: the same bytes as X-Forwarded-Prefix set on its own.
			var onePrefix, blockPrefix fasthttp.RequestHeader
			for _, h := range []*fasthttp.RequestHeader{&onePrefix, &blockPrefix} {
				h.SetRequestURI("/notes")
				h.SetHost("app.local")
				h.Set("Accept", "application/json")
			}
			prefix := []byte("/billing")
			setForwardedOnce(&onePrefix, st.ip, "https")
			onePrefix.SetCanonical(requestIDKey, reqID)
			(&Server{}).setForwardedPrefix(&onePrefix, st, prefix, false)
			setIdentity(&onePrefix, signer.KeyID(), cl, w, st)
			st.hdr = forwardedLines(st.hdr[:0], st.ip, "https", blockPrefix.Host(), reqID)
			(&Server{}).setForwardedPrefix(&blockPrefix, st, prefix, true)
			st.hdr = identityBlock(st.hdr, w, st)
			blockPrefix.SetCanonical(st.hdr, st.sig)
			want2, got2 := onePrefix.AppendBytes(nil), blockPrefix.AppendBytes(nil)
			if !bytes.Equal(got2, want2) || !bytes.Contains(got2, []byte("\r\nX-Forwarded-Prefix: /billing\r\n")) {
				t.Fatalf("block with X-Forwarded-Prefix writes\n%q\nheaders one by one write\n%q", got2, want2)
			}

			// From a trusted peer the forwarding headers are set one by
			// one and the identity headers alone form the block: the
			// same bytes again.
			var trusted fasthttp.RequestHeader
			trusted.SetRequestURI("/notes")
			trusted.SetHost("app.local")
			trusted.Set("Accept", "application/json")
			setForwardedOnce(&trusted, st.ip, "https")
			trusted.SetCanonical(requestIDKey, reqID)
			trusted.SetCanonical(identityBlock(nil, w, st), st.sig)
			if got := trusted.AppendBytes(nil); !bytes.Equal(got, want) {
				t.Fatalf("identity block after forwarding headers writes\n%q\nheaders one by one write\n%q", got, want)
			}
		})
	}
}

// A warm state with a line break in any value is not written as a block:
// its headers are set one by one, where fasthttp turns the break into a
// space, so no value can add a header line of its own.
func TestIdentityLineBreakSetOneByOne(t *testing.T) {
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	cl := &tokens.Claims{Sub: "u1", Tid: "t1", Sid: "s1", Principal: identity.PrincipalUser}
	for _, roles := range []string{"member\r\nX-Auth-Roles: admin", "member\nX-Auth-Roles: admin", "member\rX-Auth-Roles: admin"} {
		p := &identity.Projection{UserID: "u1", TenantID: "t1", Roles: []string{roles}}
		pe := &projection.Entry{Sub: "u1", Tid: "t1", P: p, Roles: roles}
		if w := newWarm(cl, pe).signed(cl, signer); w.lines {
			t.Fatalf("roles %q: written as a block", roles)
		}
	}
	if !anyLineBreak("a", "b\n") || anyLineBreak("a", "b c", "") || !hasLineBreak([]byte("h\r")) || hasLineBreak([]byte("h")) {
		t.Fatal("anyLineBreak, hasLineBreak")
	}
	var h fasthttp.RequestHeader
	h.SetRequestURI("/")
	p := &identity.Projection{UserID: "u1", TenantID: "t1"}
	w := newWarm(cl, &projection.Entry{Sub: "u1", Tid: "t1", P: p, Roles: "member\r\nX-Auth-Roles: admin"}).signed(cl, signer)
	setIdentity(&h, signer.KeyID(), cl, w, &state{ip: []byte("203.0.113.7"), ts: []byte("1"), sig: []byte("s")})
	if n := strings.Count(string(h.AppendBytes(nil)), "\r\nX-Auth-Roles:"); n != 1 {
		t.Fatalf("%d X-Auth-Roles lines: %q", n, h.AppendBytes(nil))
	}
}

// An anonymous request (a public route, an optional one without a token)
// is written from its router's anonymous state as a block too: the same
// bytes as its headers set one by one, under the signature the signer
// gives the anonymous identity, for each upstream's key.
func TestAnonymousBlockMatchesHeaders(t *testing.T) {
	core, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	app, err := identity.NewKeySigner(identity.Key{ID: "app-notes", Secret: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	rt := &Router{Signers: []*identity.KeySigner{core, app}}
	for i, signer := range rt.Signers {
		w := rt.anonymous(i)
		if w != rt.anonymous(i) || w.pe != nil || !w.lines || w.mac.Signer() != signer {
			t.Fatalf("upstream %d: anonymous state %+v: want one per router, no projection, lines, this upstream's signer", i, w)
		}
		rq := identity.Request{Timestamp: 1764547200000, RequestID: "1b9b0470a89fb6d3-1", ClientIP: "203.0.113.7", Method: "GET",
			PathQuery: "/notes?page=2", BodySHA256: identity.EmptyBodySHA256}
		var mac identity.MACScratch
		got := w.mac.AppendSignatureWith(nil, &rq, &mac)
		id := identity.Identity{Principal: identity.PrincipalAnonymous}
		if want := signer.AppendSignature(nil, &id, &rq); !bytes.Equal(got, want) {
			t.Fatalf("upstream %d: anonymous state signs %q; the signer signs the anonymous identity %q", i, got, want)
		}
		st := &state{ip: []byte("203.0.113.7"), ts: mac.Timestamp(), sig: got}
		var one, block fasthttp.RequestHeader
		for _, h := range []*fasthttp.RequestHeader{&one, &block} {
			h.SetRequestURI("/notes")
			h.SetHost("app.local")
		}
		setForwardedOnce(&one, st.ip, "https")
		one.SetCanonical(requestIDKey, []byte(rq.RequestID))
		setIdentity(&one, signer.KeyID(), nil, w, st)
		st.hdr = forwardedLines(st.hdr[:0], st.ip, "https", block.Host(), []byte(rq.RequestID))
		block.SetCanonical(identityBlock(st.hdr, w, st), st.sig)
		if got, want := block.AppendBytes(nil), one.AppendBytes(nil); !bytes.Equal(got, want) {
			t.Fatalf("upstream %d: block writes\n%q\nheaders one by one write\n%q", i, got, want)
		}
	}
}
