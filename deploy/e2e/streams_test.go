package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Long-lived connections through the proxies: the notes app's WebSocket
// echo (/notes/ws) and event stream (/notes/events), both needing
// notes:read. A proxy closes an open stream when its caller loses access,
// whichever core or proxy the change went through: a WebSocket with a
// close frame 1008 naming the reason, an event stream with a clean end.

// liveStream is an open stream whose end a goroutine waits for.
type liveStream struct {
	kind, via string          // "ws" or "sse"; the proxy's name
	closed    chan struct{}   // closed when the stream ended
	at        time.Time       // when it ended
	err       error           // how: a *websocket.CloseError, nil for a clean SSE end
	stop      func()          // ends it from the client's side
	conn      *websocket.Conn // a WebSocket's connection
	echoed    chan []byte     // a WebSocket's messages
}

// echoes checks that an open WebSocket still answers: the stream is alive,
// not merely not yet seen to end.
func (s *liveStream) echoes() error {
	msg := "ping " + randToken(3)
	if err := s.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fmt.Errorf("ws via %s: write: %w", s.via, err)
	}
	select {
	case got := <-s.echoed:
		if string(got) != msg {
			return fmt.Errorf("ws via %s: echo %q, want %q", s.via, got, msg)
		}
		return nil
	case <-s.closed:
		return fmt.Errorf("ws via %s: ended (%v)", s.via, s.err)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("ws via %s: no echo within 5s", s.via)
	}
}

// endedWithin waits up to timeout for the stream's end.
func (s *liveStream) endedWithin(timeout time.Duration) error {
	select {
	case <-s.closed:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s via %s: still open after %s", s.kind, s.via, timeout)
	}
}

// open reports whether the stream has not ended.
func (s *liveStream) open() bool {
	select {
	case <-s.closed:
		return false
	default:
		return true
	}
}

// wsDialer opens WebSockets through the proxies.
var wsDialer = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}

// openWS opens /notes/ws through p as token's holder and checks one echo,
// so that the connection is spliced through to the app.
func openWS(p *service, token string) (*liveStream, error) {
	h := http.Header{"Authorization": {"Bearer " + token}}
	c, resp, err := wsDialer.Dial("ws://"+p.addr+"/notes/ws", h)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 400))
			resp.Body.Close()
			return nil, fmt.Errorf("ws via %s: %v: %d %s", p.name, err, resp.StatusCode, b)
		}
		return nil, fmt.Errorf("ws via %s: %w", p.name, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg := "ping " + randToken(3)
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.Close()
		return nil, fmt.Errorf("ws via %s: write: %w", p.name, err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
		c.Close()
		return nil, fmt.Errorf("ws via %s: echo %q, %v; want %q", p.name, got, err, msg)
	}
	_ = c.SetReadDeadline(time.Time{})
	s := &liveStream{kind: "ws", via: p.name, closed: make(chan struct{}), stop: func() { c.Close() },
		conn: c, echoed: make(chan []byte, 1)}
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				s.at, s.err = time.Now(), err
				close(s.closed)
				return
			}
			select {
			case s.echoed <- b:
			default:
			}
		}
	}()
	return s, nil
}

// sseClient holds event streams; their length is bounded by the tests.
var sseClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// openSSE opens /notes/events through p as token's holder: open once the
// proxy has passed on the app's 200 and event-stream headers.
func openSSE(p *service, token string) (*liveStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", p.url("/notes/events"), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	defer hcancel()
	type answer struct {
		resp *http.Response
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := sseClient.Do(req)
		got <- answer{resp, err}
	}()
	var a answer
	select {
	case a = <-got:
	case <-hctx.Done():
		cancel()
		return nil, fmt.Errorf("sse via %s: no headers within 5s", p.name)
	}
	if a.err != nil {
		cancel()
		return nil, fmt.Errorf("sse via %s: %w", p.name, a.err)
	}
	if a.resp.StatusCode != http.StatusOK || a.resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(a.resp.Body, 400))
		a.resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("sse via %s: %d %q %s", p.name, a.resp.StatusCode, a.resp.Header.Get("Content-Type"), b)
	}
	s := &liveStream{kind: "sse", via: p.name, closed: make(chan struct{}), stop: cancel}
	go func() {
		_, err := io.Copy(io.Discard, a.resp.Body)
		s.at, s.err = time.Now(), err
		a.resp.Body.Close()
		close(s.closed)
	}()
	return s, nil
}

// openStream polls open until it succeeds (access granted through one
// side may reach the other proxy a little later).
func openStream(t *testing.T, what string, open func() (*liveStream, error)) *liveStream {
	t.Helper()
	var s *liveStream
	if _, err := pollUntil(what, propagation, time.Millisecond, func() (bool, string) {
		var err error
		s, err = open()
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// checkEnd checks how s ended: a WebSocket with close code 1008 and
// reason, an event stream with a clean end (the last chunk, no error).
func checkEnd(t *testing.T, s *liveStream, reason string) {
	t.Helper()
	switch s.kind {
	case "ws":
		var ce *websocket.CloseError
		if !errors.As(s.err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != reason {
			t.Fatalf("ws via %s ended with %v, want close 1008 %q", s.via, s.err, reason)
		}
	case "sse":
		if s.err != nil {
			t.Fatalf("sse via %s ended with %v, want a clean end", s.via, s.err)
		}
	}
}

// streamsClosed reads authproxy_streams_closed_total for kind and reason
// from p's metrics (0 before the first such close).
func streamsClosed(p *service, kind, reason string) (int, error) {
	resp, err := metricsClient.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	want := fmt.Sprintf(`authproxy_streams_closed_total{kind=%q,reason=%q} `, kind, reason)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, sc.Err()
}

// closedCounts reads streamsClosed for kind and reason at both proxies.
func closedCounts(t *testing.T, kind, reason string) map[*service]int {
	t.Helper()
	n := map[*service]int{}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		c, err := streamsClosed(p, kind, reason)
		if err != nil {
			t.Fatalf("%s's metrics: %v", p.name, err)
		}
		n[p] = c
	}
	return n
}

// expectClosed waits until each proxy has counted exactly want[p] more
// closes of kind for reason since before: an event stream's clean end is
// the proxy's doing, for that reason, not the app's.
func expectClosed(t *testing.T, kind, reason string, before map[*service]int, want map[*service]int) {
	t.Helper()
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if _, err := pollUntil(fmt.Sprintf("%s counts %d %s closes for %s", p.name, want[p], kind, reason), propagation, 5*time.Millisecond, func() (bool, string) {
			c, err := streamsClosed(p, kind, reason)
			if err != nil {
				return false, err.Error()
			}
			return c-before[p] == want[p], fmt.Sprintf("%d more", c-before[p])
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// other is the proxy that is not p.
func other(p *service) *service {
	if p == sys.proxyA {
		return sys.proxyB
	}
	return sys.proxyA
}

// TestStreamsClosedOnRevokeAtOtherProxy gives a member notes:read through
// a custom role only, opens a WebSocket and an event stream through one
// proxy, removes the role through the other proxy (and its core), and
// measures the time from the revoke's answer to each stream's end, over
// 100 trials alternating the proxies. The owner's streams in the same
// tenant stay open throughout.
func TestStreamsClosedOnRevokeAtOtherProxy(t *testing.T) {
	const trials = 100
	owner := signup(t, sys.proxyA)
	role := createRole(t, owner, sys.proxyA, "notes:read")
	m := addMember(t, owner, sys.proxyA, role)
	if got := me(t, sys.proxyA, m.Tokens.AccessToken); !slices.Equal(got.Roles, []string{role}) {
		t.Fatalf("member's roles %v, want only %s", got.Roles, role)
	}
	// Bystanders: the owner keeps a WebSocket open through each proxy.
	var bystanders []*liveStream
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		bystanders = append(bystanders, openStream(t, "owner's ws via "+p.name, func() (*liveStream, error) { return openWS(p, owner.Tokens.AccessToken) }))
	}

	before := closedCounts(t, "sse", "insufficient_scope")
	lat := map[string][]time.Duration{}
	for i := range trials {
		via := []*service{sys.proxyA, sys.proxyB}[i%2]
		roleURL := other(via).url("/api/v1/users/" + m.UserID + "/roles/" + role)
		if i > 0 {
			if r := call(t, "PUT", roleURL, owner.Tokens.AccessToken, nil); r.Status/100 != 2 {
				t.Fatalf("trial %d: grant %s: %s", i, role, r)
			}
		}
		ws := openStream(t, fmt.Sprintf("trial %d: ws via %s after the grant", i, via.name), func() (*liveStream, error) { return openWS(via, m.Tokens.AccessToken) })
		sse := openStream(t, fmt.Sprintf("trial %d: sse via %s after the grant", i, via.name), func() (*liveStream, error) { return openSSE(via, m.Tokens.AccessToken) })

		r := call(t, "DELETE", roleURL, owner.Tokens.AccessToken, nil)
		answered := time.Now()
		if r.Status/100 != 2 {
			t.Fatalf("trial %d: revoke %s through %s: %s", i, role, other(via).name, r)
		}
		for _, s := range []*liveStream{ws, sse} {
			if err := s.endedWithin(propagation); err != nil {
				t.Fatalf("trial %d: after the revoke through %s: %v", i, other(via).name, err)
			}
			checkEnd(t, s, "insufficient_scope")
			lat[s.kind] = append(lat[s.kind], s.at.Sub(answered))
		}
		if i == 0 {
			// The revoke took notes:read away: nothing else grants it.
			for _, p := range []*service{sys.proxyA, sys.proxyB} {
				_, got := mustWaitStatus(t, "GET", p.url("/notes"), m.Tokens.AccessToken, http.StatusForbidden, propagation)
				expectProblem(t, got, http.StatusForbidden)
				if _, err := openWS(p, m.Tokens.AccessToken); err == nil {
					t.Fatalf("ws via %s opened without notes:read", p.name)
				}
			}
		}
	}
	for _, s := range bystanders {
		if err := s.echoes(); err != nil {
			t.Fatalf("the owner's stream after the member's revokes: %v", err)
		}
	}
	expectClosed(t, "sse", "insufficient_scope", before, map[*service]int{sys.proxyA: trials / 2, sys.proxyB: trials / 2})

	for _, kind := range []string{"ws", "sse"} {
		l := lat[kind]
		slices.Sort(l)
		p50, p99 := percentile(l, 50), percentile(l, 99)
		t.Logf("%s closed at one proxy after the revoke answered through the other, %d trials (negative: before the answer reached the client): min %v p50 %v p90 %v p99 %v max %v",
			kind, len(l), l[0], p50, percentile(l, 90), p99, l[len(l)-1])
		// As TestNotesGrantAndRevokeReachOtherProxy: a generous bound on a
		// shared machine (the target is p99 < 50 ms; the log above reports it).
		if p50 > 100*time.Millisecond || p99 > time.Second {
			t.Errorf("%s: p50 %v p99 %v, want within 100ms and 1s", kind, p50, p99)
		}
	}
}

// TestStreamsClosedOnLogout opens the member's streams through both
// proxies with one session, logs that session out through proxy A, and
// sees all of them end; another session of the same user keeps its own.
func TestStreamsClosedOnLogout(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	second := login(t, sys.proxyB, m)
	var mine []*liveStream
	var kept []*liveStream
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mine = append(mine,
			openStream(t, "ws via "+p.name, func() (*liveStream, error) { return openWS(p, m.Tokens.AccessToken) }),
			openStream(t, "sse via "+p.name, func() (*liveStream, error) { return openSSE(p, m.Tokens.AccessToken) }))
		kept = append(kept, openStream(t, "second session's ws via "+p.name, func() (*liveStream, error) { return openWS(p, second.AccessToken) }))
	}

	before := closedCounts(t, "sse", "session_revoked")
	r := call(t, "POST", sys.proxyA.url("/api/v1/auth/logout"), m.Tokens.AccessToken, nil)
	if r.Status/100 != 2 {
		t.Fatalf("logout: %s", r)
	}
	for _, s := range mine {
		if err := s.endedWithin(propagation); err != nil {
			t.Fatalf("after the logout through proxy A: %v", err)
		}
		checkEnd(t, s, "session_revoked")
	}
	expectClosed(t, "sse", "session_revoked", before, map[*service]int{sys.proxyA: 1, sys.proxyB: 1})
	for _, s := range kept {
		if err := s.echoes(); err != nil {
			t.Fatalf("the second session's stream after the first one's logout: %v", err)
		}
	}
	// The logged-out token opens nothing more.
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if _, err := openWS(p, m.Tokens.AccessToken); err == nil {
			t.Fatalf("ws via %s opened with a logged-out token", p.name)
		}
	}
}

// TestStreamsClosedOnTenantSuspended suspends a tenant with the operator
// command while its owner and a member hold streams through both proxies:
// all of them end; another tenant's streams stay open.
func TestStreamsClosedOnTenantSuspended(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	bystander := signup(t, sys.proxyB)
	var theirs, kept []*liveStream
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, tok := range []string{owner.Tokens.AccessToken, m.Tokens.AccessToken} {
			theirs = append(theirs,
				openStream(t, "ws via "+p.name, func() (*liveStream, error) { return openWS(p, tok) }),
				openStream(t, "sse via "+p.name, func() (*liveStream, error) { return openSSE(p, tok) }))
		}
		kept = append(kept,
			openStream(t, "other tenant's ws via "+p.name, func() (*liveStream, error) { return openWS(p, bystander.Tokens.AccessToken) }),
			openStream(t, "other tenant's sse via "+p.name, func() (*liveStream, error) { return openSSE(p, bystander.Tokens.AccessToken) }))
	}

	before := closedCounts(t, "sse", "inactive")
	cmd := exec.Command(filepath.Join(sys.bin, "coreapi"), "tenants", "suspend", owner.TenantID)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+sys.pg.URL())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("coreapi tenants suspend: %v\n%s", err, out)
	}
	for _, s := range theirs {
		if err := s.endedWithin(propagation); err != nil {
			t.Fatalf("after the tenant's suspension: %v", err)
		}
		checkEnd(t, s, "inactive")
	}
	expectClosed(t, "sse", "inactive", before, map[*service]int{sys.proxyA: 2, sys.proxyB: 2})
	for _, s := range kept {
		if !s.open() {
			t.Fatalf("the other tenant's %s via %s ended (%v) on the suspension", s.kind, s.via, s.err)
		}
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if _, err := openWS(p, owner.Tokens.AccessToken); err == nil {
			t.Fatalf("ws via %s opened in a suspended tenant", p.name)
		}
	}
}
