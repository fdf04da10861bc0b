package streams

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/decide"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// frame builds a WebSocket frame header for a payload of n bytes, and the
// payload.
func frame(n int, masked bool) []byte {
	b := []byte{0x82}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, 0, 0)
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = append(b, m|127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, make([]byte, n)...)
}

func TestFramesBoundaries(t *testing.T) {
	var stream []byte
	var ends []int // offsets just after each frame
	for _, f := range [][]byte{frame(0, false), frame(5, false), frame(125, true), frame(126, false), frame(70000, true), frame(3, false)} {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	isEnd := map[int]bool{0: true}
	for _, e := range ends {
		isEnd[e] = true
	}
	// Fed in every split size, the tracker is at a boundary exactly at the
	// frame ends.
	for _, step := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		var f frames
		for off := 0; off < len(stream); {
			n := min(step, len(stream)-off)
			f.feed(stream[off : off+n])
			off += n
			if f.boundary() != isEnd[off] {
				t.Fatalf("step %d: boundary at %d = %v, want %v", step, off, f.boundary(), isEnd[off])
			}
		}
	}
}

func TestCloseFrame(t *testing.T) {
	for reason, code := range map[string]uint16{"insufficient_scope": 1008, "token_expired": 1008, "session_revoked": 1008,
		ReasonShutdown: 1001, ReasonIdle: 1001, ReasonError: 1011, ReasonUnavailable: 1013,
		// A reload moved the route: nothing was withdrawn, a reconnect is
		// routed by the new rules (before the upgrade: 503, Retry-After).
		ReasonRouteChanged: 1012} {
		b := closeFrame(reason)
		if b[0] != 0x88 || int(b[1]) != 2+len(reason) || binary.BigEndian.Uint16(b[2:]) != code || string(b[4:]) != reason {
			t.Errorf("%s: frame %x", reason, b)
		}
	}
	// A control frame's payload is at most 125 bytes.
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	if b := closeFrame(string(long)); len(b) != 2+125 || b[1] != 125 {
		t.Fatalf("long reason: %d bytes, length byte %d", len(b), b[1])
	}
}

func TestCaps(t *testing.T) {
	m := New(Options{MaxConns: 3, MaxPerUser: 2}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x"}
	alice := &tokens.Claims{Sub: "alice", Tid: "t", Sid: "s1"}
	bob := &tokens.Claims{Sub: "bob", Tid: "t", Sid: "s2"}
	a1, err := m.reserve("websocket", "/x", alice, rt, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserve("websocket", "/x", alice, rt, "r2"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserve("sse", "/x", alice, rt, "r3"); !errors.Is(err, ErrUserLimit) {
		t.Fatalf("third of alice: %v, want ErrUserLimit", err)
	}
	if _, err := m.reserve("sse", "/x", nil, rt, "r4"); err != nil { // anonymous: the proxy cap only
		t.Fatal(err)
	}
	if _, err := m.reserve("sse", "/x", bob, rt, "r5"); !errors.Is(err, ErrProxyLimit) {
		t.Fatalf("fourth stream: %v, want ErrProxyLimit", err)
	}
	m.release(a1, ReasonClient)
	m.release(a1, ReasonClient) // twice: no effect
	if m.Open() != 2 || len(m.snapshot(m.users, "alice")) != 1 {
		t.Fatalf("open %d, alice %d", m.Open(), len(m.snapshot(m.users, "alice")))
	}
	if _, err := m.reserve("sse", "/x", bob, rt, "r6"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}

// A stream whose hijack never runs (its client vanished before the answer
// was written) is forgotten and its upstream connection closed.
func TestHijackNeverRun(t *testing.T) {
	m := New(Options{HandshakeTimeout: 20 * time.Millisecond}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	c, err := m.reserve("websocket", "/x", &tokens.Claims{Sub: "a", Tid: "t"}, &rules.Route{}, "r")
	if err != nil {
		t.Fatal(err)
	}
	up, peer := net.Pipe()
	defer peer.Close()
	var started atomic.Bool
	m.watchHijack(c, &started, up)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("upstream side: %v, want closed", err)
	}
	if m.Open() != 0 {
		t.Fatalf("open = %d", m.Open())
	}
	// A hijack that runs in time is left alone.
	c, _ = m.reserve("websocket", "/x", nil, &rules.Route{}, "r2")
	up2, peer2 := net.Pipe()
	defer peer2.Close()
	var started2 atomic.Bool
	started2.Store(true)
	m.watchHijack(c, &started2, up2)
	time.Sleep(60 * time.Millisecond)
	if m.Open() != 1 {
		t.Fatalf("open = %d, want the started stream kept", m.Open())
	}
}

// Anonymous streams count against MaxPerIP under their client's address
// (an IPv6 client by its /64); streams with a principal do not (they have
// MaxPerUser), and a released stream frees its slot.
func TestPerIPCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(Options{MaxPerIP: 2}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	rt := &rules.Route{Prefix: "/x"}
	from := func(ip string) origin { return originOf(&Request{ClientIP: ip, Path: "/x", Method: "GET"}) }
	a1, err := m.reserveAt("websocket", "/x", nil, rt, "r1", from("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r2", from("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r3", from("192.0.2.1")); !errors.Is(err, ErrIPLimit) {
		t.Fatalf("third anonymous stream of 192.0.2.1: %v, want ErrIPLimit", err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r4", from("192.0.2.2")); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// A principal's streams from the same address are not counted.
	for i := range 3 {
		cl := &tokens.Claims{Sub: fmt.Sprintf("u%d", i), Tid: "t"}
		if _, err := m.reserveAt("sse", "/x", cl, rt, "r5", from("192.0.2.1")); err != nil {
			t.Fatalf("authenticated stream %d from a full address: %v", i, err)
		}
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r6", from("192.0.2.1")); !errors.Is(err, ErrIPLimit) {
		t.Fatalf("anonymous after authenticated ones: %v, want ErrIPLimit", err)
	}
	m.release(a1, ReasonClient)
	m.release(a1, ReasonClient) // twice: no effect
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r7", from("192.0.2.1")); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r8", from("192.0.2.1")); !errors.Is(err, ErrIPLimit) {
		t.Fatalf("the freed slot taken twice: %v", err)
	}
	// An IPv6 client counts by its /64: another address of it shares the
	// budget, another /64 has its own.
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r9", from("2001:db8:1:2::1")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r10", from("2001:db8:1:2:ffff::7")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r11", from("2001:db8:1:2:abcd::9")); !errors.Is(err, ErrIPLimit) {
		t.Fatalf("third stream of one /64: %v, want ErrIPLimit", err)
	}
	if _, err := m.reserveAt("sse", "/x", nil, rt, "r12", from("2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	if n := testutil.ToFloat64(m.m.refused.WithLabelValues("ip_limit")); n != 4 {
		t.Fatalf("refused ip_limit = %v, want 4", n)
	}
	// 192.0.2.1: 2 anonymous and 3 authenticated; 192.0.2.2: 1; the
	// first /64: 2, the second: 1.
	if m.Open() != 9 || len(m.snapshot(m.ips, "192.0.2.1")) != 2 || len(m.snapshot(m.ips, "2001:db8:1:2::/64")) != 2 {
		t.Fatalf("open = %d, 192.0.2.1 holds %d", m.Open(), len(m.snapshot(m.ips, "192.0.2.1")))
	}

	// 0: no cap.
	m = New(Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	for i := range 50 {
		if _, err := m.reserveAt("sse", "/x", nil, rt, "r", from("192.0.2.1")); err != nil {
			t.Fatalf("stream %d without a cap: %v", i, err)
		}
	}
}

// The refusals of every cap are exported at zero before the first one.
func TestRefusedExportedAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	got := map[string]bool{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "authproxy_streams_refused_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if mt.GetCounter().GetValue() == 0 {
				got[mt.GetLabel()[0].GetValue()] = true
			}
		}
	}
	for _, r := range []string{"proxy_limit", "user_limit", "ip_limit"} {
		if !got[r] {
			t.Errorf("authproxy_streams_refused_total{reason=%q} not exported at zero", r)
		}
	}
}

// TestClosedReasonsDocumented: every reason the closed-streams metric
// counts (authproxy_streams_closed_total{reason}) is named in its row of
// docs/operations.md: the reasons of the streams package and every
// decision outcome but allow.
func TestClosedReasonsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "| `authproxy_streams_closed_total{") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("no row of authproxy_streams_closed_total in docs/operations.md")
	}
	reasons := []string{ReasonClient, ReasonUpstream, ReasonIdle, ReasonTokenExpired, ReasonShutdown, ReasonError,
		ReasonRouteChanged, ReasonNoMembership, ReasonKeyRemoved, ReasonUnavailable, ReasonRefused}
	for _, o := range decide.Outcomes() {
		if o != decide.Allow {
			reasons = append(reasons, o.String())
		}
	}
	for _, r := range reasons {
		if !strings.Contains(row, "`"+r+"`") {
			t.Errorf("reason %q is not named in the row of authproxy_streams_closed_total", r)
		}
	}
}
