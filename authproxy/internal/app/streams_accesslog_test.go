package app

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// streamEndLines are the proxy's stream end lines, decoded.
func streamEndLines(t *testing.T, e *env) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"stream end"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// streamEnd waits for the one stream end line of the request reqID.
func streamEnd(t *testing.T, e *env, reqID string) map[string]any {
	t.Helper()
	var got map[string]any
	testenv.Eventually(t, func() error {
		var found []map[string]any
		for _, l := range streamEndLines(t, e) {
			if l["request_id"] == reqID {
				found = append(found, l)
			}
		}
		if len(found) != 1 {
			return fmt.Errorf("%d stream end lines of request %s, want 1; log:\n%s", len(found), reqID, e.logs.String())
		}
		got = found[0]
		return nil
	})
	return got
}

// openingLine is the access line of the request reqID.
func openingLine(t *testing.T, e *env, reqID string) map[string]any {
	t.Helper()
	var got map[string]any
	testenv.Eventually(t, func() error {
		for _, l := range accessLines(t, e) {
			if l["request_id"] == reqID {
				got = l
				return nil
			}
		}
		return fmt.Errorf("no access line of request %s", reqID)
	})
	return got
}

// wantStreamEnd checks the stream end line of the request reqID: its
// reason and kind, and the fields it shares with the stream's opening
// access line, which must be the same.
func wantStreamEnd(t *testing.T, e *env, reqID, kind, reason string) map[string]any {
	t.Helper()
	end, open := streamEnd(t, e, reqID), openingLine(t, e, reqID)
	if end["level"] != "INFO" || end["kind"] != kind || end["reason"] != reason {
		t.Errorf("stream end: level %v, kind %v, reason %v; want INFO, %s, %s", end["level"], end["kind"], end["reason"], kind, reason)
	}
	// Every field of either line but each line's own is in both, with
	// the same value: a field added to the access line is on the end
	// line too.
	own := map[string]bool{"time": true, "level": true, "msg": true, "duration_ms": true,
		"status": true, "outcome": true, // the opening's
		"kind": true, "reason": true, "bytes_to_client": true, "bytes_to_upstream": true} // the stream's
	for _, line := range []map[string]any{open, end} {
		for k := range line {
			if own[k] {
				continue
			}
			if ev, ok := end[k]; !ok {
				t.Errorf("stream end: no %s, the opening line's %v", k, open[k])
			} else if ov, ok := open[k]; !ok {
				t.Errorf("stream end %s = %v, not on the opening line", k, ev)
			} else if ev != ov {
				t.Errorf("stream end %s = %v, the opening line's %v", k, ev, ov)
			}
		}
	}
	for _, k := range []string{"request_id", "method", "path", "route", "upstream", "principal", "user_id", "tenant_id", "remote_ip"} {
		if _, ok := end[k]; !ok {
			t.Errorf("stream end: no %s", k)
		}
	}
	for _, k := range []string{"duration_ms", "bytes_to_client", "bytes_to_upstream"} {
		if v, ok := end[k].(float64); !ok || v < 0 {
			t.Errorf("stream end %s = %#v, want a number", k, end[k])
		}
	}
	if _, ok := end["time"].(string); !ok {
		t.Errorf("stream end time = %#v", end["time"])
	}
	return end
}

// TestStreamEndLogged: with ACCESS_LOG on, every stream that opened ends
// with one line in the access log's format (buffered, or through the
// logger), carrying the request id, trace id, route and caller of its
// opening request, its kind, why it ended (the label of
// authproxy_streams_closed_total), how long it lasted and the bytes
// relayed each way; never its token. Only a withdrawal, a removed key and
// an unanswered recheck were logged; a stream that the client, the
// upstream or its silence ended left a count alone.
func TestStreamEndLogged(t *testing.T) {
	for _, slogAccess := range []bool{false, true} {
		t.Run(fmt.Sprintf("slog=%v", slogAccess), func(t *testing.T) {
			t.Parallel()
			p, _ := memTracer(t, "always_on")
			a := newStreamApp(t)
			e := start(t, envOpt{slogAccess: slogAccess, tracing: p, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"},
				rules: a.rules("  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 1m}\n")})
			e.core.SetProjection(notesProjection())
			tok := e.token(nil)

			t.Run("client gone: event stream", func(t *testing.T) {
				s := e.openSSE(t, "/notes/open-events", tok)
				a.events <- `{"id":1}`
				if got := s.next(t, 5*time.Second); got != `{"id":1}` {
					t.Fatalf("event = %q", got)
				}
				s.resp.Body.Close()
				end := wantStreamEnd(t, e, s.resp.Header.Get(requestid.Header), "event_stream", "client")
				if end["principal"] != "user" || end["user_id"] != userID || end["tenant_id"] != tenantID || end["route"] != "/notes/open-events" {
					t.Errorf("stream end line %v: not the caller's", end)
				}
				if tr, _ := end["trace_id"].(string); len(tr) != 32 {
					t.Errorf("trace_id = %v, want the opening's trace", end["trace_id"])
				}
				if n := end["bytes_to_client"].(float64); n < float64(len("data: {\"id\":1}")) {
					t.Errorf("bytes_to_client = %v, want at least the event's", n)
				}
			})
			t.Run("upstream ended: WebSocket", func(t *testing.T) {
				c, resp, err := e.dialWS("/notes/ws", bearer(tok))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				msg := strings.Repeat("m", 1000)
				echo(t, c, msg)
				// The app answers the client's close frame with its own
				// and closes its connection: the upstream ends it.
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				if code, _ := wantClosed(t, c, 5*time.Second); code != websocket.CloseNormalClosure {
					t.Fatalf("close = %d", code)
				}
				end := wantStreamEnd(t, e, resp.Header.Get(requestid.Header), "websocket", "upstream")
				if up, down := end["bytes_to_upstream"].(float64), end["bytes_to_client"].(float64); up < 1000 || down < 1000 {
					t.Errorf("bytes to the upstream %v, to the client %v; want at least the message's 1000 each way", up, down)
				}
			})
			t.Run("access withdrawn: WebSocket", func(t *testing.T) {
				defer func() {
					e.core.SetProjection(notesProjection())
					e.publishAndWait("auth.invalidate.user." + userID)
				}()
				c, resp, err := e.dialWS("/notes/ws", bearer(tok))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				echo(t, c, "x")
				pr := notesProjection()
				pr.Permissions = []string{"tenant:read"}
				e.core.SetProjection(pr)
				e.publish("auth.invalidate.user." + userID)
				if code, text := wantClosed(t, c, 5*time.Second); code != websocket.ClosePolicyViolation || text != "insufficient_scope" {
					t.Fatalf("close = %d %q", code, text)
				}
				wantStreamEnd(t, e, resp.Header.Get(requestid.Header), "websocket", "insufficient_scope")
			})
			if strings.Contains(e.logs.String(), tok[strings.LastIndexByte(tok, '.')+1:]) {
				t.Errorf("the token's signature written to the log:\n%s", e.logs.String())
			}
		})
	}
}

// An idle stream's end line says so, and how long it lasted: from its
// request's start to its end, at least its stream_timeout.
func TestStreamEndLoggedIdle(t *testing.T) {
	t.Parallel()
	a := newStreamApp(t)
	e := start(t, envOpt{realClock: true, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"},
		rules: a.rules("  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: public, stream_timeout: 1s}\n")})
	s := e.openSSE(t, "/notes/open-events", "")
	s.wantEnd(t, 10*time.Second)
	end := wantStreamEnd(t, e, s.resp.Header.Get(requestid.Header), "event_stream", "idle")
	if end["principal"] != "anonymous" || end["user_id"] != "" {
		t.Errorf("stream end line %v: not anonymous", end)
	}
	if d := end["duration_ms"].(float64); d < 1000 {
		t.Errorf("duration_ms = %v, want at least the stream_timeout's 1000", d)
	}
}

// With ACCESS_LOG off, a stream's end writes no line, as its request
// writes none.
func TestStreamEndNotLoggedWithoutAccessLog(t *testing.T) {
	t.Parallel()
	a := newStreamApp(t)
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "false", "LOG_LEVEL": "info"},
		rules: a.rules("  - {prefix: /notes/open-events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 1m}\n")})
	e.core.SetProjection(notesProjection())
	s := e.openSSE(t, "/notes/open-events", e.token(nil))
	s.resp.Body.Close()
	testenv.Eventually(t, func() error {
		return testenv.Want("streams closed by the client", metricCount(t, e, `authproxy_streams_closed_total{kind="sse",reason="client"}`), 1)
	})
	if lines := streamEndLines(t, e); len(lines) != 0 {
		t.Fatalf("stream end lines with ACCESS_LOG=false: %v", lines)
	}
}
