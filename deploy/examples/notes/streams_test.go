package notes_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tollgate-auth/tollgate/deploy/examples/notes"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// signed returns a GET request to path signed for id.
func (a *app) signed(id identity.Identity, path string) *http.Request {
	a.t.Helper()
	r, err := http.NewRequest("GET", a.url+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	if err := verify.Sign(r, a.signer, id, time.Now()); err != nil {
		a.t.Fatal(err)
	}
	return r
}

func TestEventsStreamTheTenantsNewNotes(t *testing.T) {
	a := start(t)
	a.post(writerA, "before the stream") // not replayed
	res, err := http.DefaultClient.Do(a.signed(readerA, "/notes/events"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /notes/events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	// Subscribed once the headers are out.
	a.post(writerB, "other tenant")
	n := a.post(writerA, "hello")
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var got []string
	for len(got) < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended after %q", got)
			}
			got = append(got, l)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event: got %q", got)
		}
	}
	if got[0] != "event: note" || got[2] != "" || !strings.HasPrefix(got[1], "data: ") {
		t.Fatalf("event = %q", got)
	}
	var ev notes.Note
	if err := json.Unmarshal([]byte(strings.TrimPrefix(got[1], "data: ")), &ev); err != nil || ev != n {
		t.Fatalf("event note = %+v (%v), want %+v", ev, err, n)
	}
}

func TestStreamsNeedReadPermission(t *testing.T) {
	a := start(t)
	for _, p := range []string{"/notes/events", "/notes/ws"} {
		res, err := http.DefaultClient.Do(a.signed(nobodyA, p))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 403 {
			t.Errorf("%s without notes:read: %d, want 403", p, res.StatusCode)
		}
		r := a.signed(readerA, p)
		r.Header.Del("X-Auth-Signature")
		res, err = http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Errorf("%s unsigned: %d, want 401", p, res.StatusCode)
		}
	}
}

func TestWebSocketEchoes(t *testing.T) {
	a := start(t)
	r := a.signed(readerA, "/notes/ws")
	c, res, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(a.url, "http")+"/notes/ws", r.Header)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, res)
	}
	defer c.Close()
	for _, msg := range []string{"one", strings.Repeat("x", 10000)} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		mt, p, err := c.ReadMessage()
		if err != nil || mt != websocket.TextMessage || string(p) != msg {
			t.Fatalf("echo = %d %q, %v", mt, p, err)
		}
	}
	// Beyond the message limit the app closes.
	_ = c.WriteMessage(websocket.TextMessage, make([]byte, notes.MaxMessageBytes+1))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("oversized message: %v, want close 1009", err)
	}
}

// TestWebSocketSelectsTheOfferedSubprotocol: a browser opens the socket
// with new WebSocket(url, ["chat", "bearer." + token]); the proxy takes
// the bearer element out, and the app gets "chat". The app's 101 must
// select it: a browser fails a handshake whose answer selects none of the
// protocols it offered.
func TestWebSocketSelectsTheOfferedSubprotocol(t *testing.T) {
	a := start(t)
	r := a.signed(readerA, "/notes/ws")
	d := websocket.Dialer{Subprotocols: []string{"chat"}, HandshakeTimeout: 5 * time.Second}
	c, res, err := d.Dial("ws"+strings.TrimPrefix(a.url, "http")+"/notes/ws", r.Header)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, res)
	}
	defer c.Close()
	if got := res.Header.Get("Sec-WebSocket-Protocol"); got != "chat" || c.Subprotocol() != "chat" {
		t.Fatalf("Sec-WebSocket-Protocol answered %q, want chat (the protocol offered beside the bearer)", got)
	}
}

// A plain GET on /notes/ws is not an upgrade: 400 from the upgrader.
func TestWebSocketRouteNeedsUpgrade(t *testing.T) {
	a := start(t)
	res, err := http.DefaultClient.Do(a.signed(readerA, "/notes/ws"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("plain GET /notes/ws: %d, want 400", res.StatusCode)
	}
}

// A HEAD of /notes/events (the proxy lets HEAD through wherever it lets
// GET) answers the stream's headers and ends. It used to subscribe and run
// for as long as the connection stayed open, writing heartbeats and notes
// into a body HEAD never sends: a client that kept the connection, its
// answer being complete, waited forever for the answer to its next
// request there.
func TestEventsHeadEnds(t *testing.T) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}})
	if err != nil {
		t.Fatal(err)
	}
	h := notes.Handler(v, notes.NewStore(), nil)
	s, err := identity.NewKeySigner(appKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // the connection's end
	r := httptest.NewRequest(http.MethodHead, "/notes/events", nil).WithContext(ctx)
	if err := verify.Sign(r, s, readerA, time.Now()); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, r)
	}()
	eventually.Within(t, 10*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
			return errors.New("HEAD /notes/events still running while its connection is open")
		}
	})
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" || w.Body.Len() != 0 {
		t.Fatalf("HEAD /notes/events: %d %s %q", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}
