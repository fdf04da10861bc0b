package notes

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Heartbeat is how often /notes/events writes a comment line when no note
// comes, well under the route's stream_timeout at the proxy (rules.yaml).
const Heartbeat = 15 * time.Second

// MaxMessageBytes bounds one WebSocket message.
const MaxMessageBytes = 64 << 10

// events streams the notes created in the caller's tenant as server-sent
// events until the client (or the proxy, on revocation) ends it; a HEAD
// gets the stream's headers and nothing else.
func (h *handlers) events(w http.ResponseWriter, r *http.Request) {
	id, ok := tenantOf(w, r)
	if !ok {
		return
	}
	if r.Method == http.MethodHead {
		// The stream's headers only: a HEAD sends no body, so a stream
		// would write into nothing for as long as the connection stays
		// open, while the client, its answer complete, waits there for
		// the answer to its next request.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		return
	}
	rc := http.NewResponseController(w)
	// A stream outlives the server's per-request write timeout.
	_ = rc.SetWriteDeadline(time.Time{})
	notes, stop := h.store.Subscribe(id.TenantID)
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case n, ok := <-notes:
			if !ok {
				return // fell behind: the client reconnects
			}
			b, _ := json.Marshal(n)
			if _, err := fmt.Fprintf(w, "event: note\ndata: %s\n\n", b); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4 << 10,
	WriteBufferSize: 4 << 10,
	// A browser offers "chat" beside its "bearer.<token>" (rules.yaml); the
	// proxy takes the bearer element out, and the answer must select
	// "chat": a browser fails a handshake that selects none of its offers.
	Subprotocols: []string{"chat"},
	// The proxy in front authorizes the upgrade; the identity headers are
	// verified before this handler runs.
	CheckOrigin: func(*http.Request) bool { return true },
}

// echo answers each WebSocket message with itself.
func (h *handlers) echo(w http.ResponseWriter, r *http.Request) {
	if _, ok := tenantOf(w, r); !ok {
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered 400
	}
	defer c.Close()
	_ = c.NetConn().SetDeadline(time.Time{})
	c.SetReadLimit(MaxMessageBytes)
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, p); err != nil {
			return
		}
	}
}
