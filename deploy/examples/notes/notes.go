// Package notes is a small example service behind authproxy: tenant-scoped
// notes in memory, protected only by the signed identity headers the proxy
// adds (package verify of the shared module). It never sees a token:
//
//	GET  /notes         notes:read   → 200 {"data": [note, ...]} of the caller's tenant
//	POST /notes {text}  notes:write  → 201 note, author and tenant from the identity
//	GET  /notes/events  notes:read   → text/event-stream: "event: note" + "data: <note>" per
//	                                   note created in the tenant from then on
//	GET  /notes/ws      notes:read   → WebSocket echoing each message
//
// The proxy closes the two streams when the caller loses access (see
// rules.yaml for their routes). A signed request sent again unchanged (a
// replay of a captured one) is refused 401 by the verifier, so it creates
// no second note; see docs/identity-headers.md, "Replays".
//
// A note is {id, text, author_id, tenant_id, created_at}. Errors are
// problem+json. The proxy's rules for it are in rules.yaml beside this
// file, its permissions in permissions.yaml.
package notes

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Permissions of the service, declared in permissions.yaml.
const (
	PermRead  = "notes:read"
	PermWrite = "notes:write"
)

// Limits of a note and of the notes kept per tenant.
const (
	MaxTextRunes      = 2000
	MaxNotesPerTenant = 10000
	// MaxBodyBytes is what a POST body may weigh; the verifier answers 413
	// above it before the handler runs.
	MaxBodyBytes = 16 << 10
)

// Note is one note.
type Note struct {
	ID        string    `json:"id"`
	Text      string    `json:"text"`
	AuthorID  string    `json:"author_id"`
	TenantID  string    `json:"tenant_id"`
	CreatedAt time.Time `json:"created_at"`
}

// Store keeps notes per tenant in memory. It is safe for concurrent use.
type Store struct {
	mu    sync.RWMutex
	notes map[string][]Note // tenant id → notes, oldest first
	subs  map[string]map[chan Note]struct{}
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{notes: map[string][]Note{}, subs: map[string]map[chan Note]struct{}{}}
}

// subBuffer is how many notes a subscriber may lag behind before it is
// dropped (its channel closed: the client reconnects).
const subBuffer = 64

// Subscribe returns a channel of the notes added to the tenant from now
// on, and the function that ends the subscription. The channel is closed
// when the subscriber falls subBuffer notes behind.
func (s *Store) Subscribe(tenantID string) (<-chan Note, func()) {
	ch := make(chan Note, subBuffer)
	s.mu.Lock()
	if s.subs[tenantID] == nil {
		s.subs[tenantID] = map[chan Note]struct{}{}
	}
	s.subs[tenantID][ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[tenantID][ch]; ok {
			delete(s.subs[tenantID], ch)
			close(ch)
		}
	}
}

// ErrTenantFull is returned by Add when a tenant holds MaxNotesPerTenant notes.
var ErrTenantFull = errors.New("notes: tenant holds the maximum number of notes")

// List returns the notes of one tenant, oldest first.
func (s *Store) List(tenantID string) []Note {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Note(nil), s.notes[tenantID]...)
}

// Add stores n in its tenant.
func (s *Store) Add(n Note) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.notes[n.TenantID]) >= MaxNotesPerTenant {
		return ErrTenantFull
	}
	s.notes[n.TenantID] = append(s.notes[n.TenantID], n)
	for ch := range s.subs[n.TenantID] {
		select {
		case ch <- n:
		default: // too slow: dropped
			delete(s.subs[n.TenantID], ch)
			close(ch)
		}
	}
	return nil
}

// Handler returns the service's routes behind v's verification. now is the
// clock of created_at (nil: time.Now).
func Handler(v *verify.Verifier, store *Store, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	h := &handlers{store: store, now: now}
	mux := http.NewServeMux()
	list := verify.RequirePermission(PermRead)(http.HandlerFunc(h.list))
	create := verify.RequirePermission(PermWrite)(http.HandlerFunc(h.create))
	mux.HandleFunc("/notes", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			list.ServeHTTP(w, r)
		case http.MethodPost:
			create.ServeHTTP(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			verify.WriteProblem(w, r, problem.New(http.StatusMethodNotAllowed, problem.CodeMethodNotAllowed, r.Method+" is not allowed on /notes"))
		}
	})
	mux.Handle("GET /notes/events", verify.RequirePermission(PermRead)(http.HandlerFunc(h.events)))
	mux.Handle("GET /notes/ws", verify.RequirePermission(PermRead)(http.HandlerFunc(h.echo)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		verify.WriteProblem(w, r, problem.New(http.StatusNotFound, problem.CodeNotFound, "no such route"))
	})
	return v.Middleware(mux)
}

type handlers struct {
	store *Store
	now   func() time.Time
}

type listResponse struct {
	Data []Note `json:"data"`
}

// tenantOf returns the caller's tenant; a caller without one (a service
// principal, say) has no notes to read or write.
func tenantOf(w http.ResponseWriter, r *http.Request) (*verify.Identity, bool) {
	id := verify.MustFromContext(r.Context())
	if id.TenantID == "" || id.UserID == "" {
		verify.WriteProblem(w, r, problem.New(http.StatusForbidden, problem.CodeForbidden, "notes belong to a user of a tenant"))
		return nil, false
	}
	return id, true
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) {
	id, ok := tenantOf(w, r)
	if !ok {
		return
	}
	notes := h.store.List(id.TenantID)
	if notes == nil {
		notes = []Note{}
	}
	writeJSON(w, http.StatusOK, listResponse{Data: notes})
}

type createRequest struct {
	Text *string `json:"text"`
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) {
	id, ok := tenantOf(w, r)
	if !ok {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		verify.WriteProblem(w, r, problem.New(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia, "send application/json"))
		return
	}
	var req createRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		verify.WriteProblem(w, r, problem.New(http.StatusBadRequest, problem.CodeBadRequest, "body is not a JSON object {\"text\": string}"))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		verify.WriteProblem(w, r, problem.New(http.StatusBadRequest, problem.CodeBadRequest, "trailing data after the JSON object"))
		return
	}
	if msg := validText(req.Text); msg != "" {
		p := problem.New(http.StatusUnprocessableEntity, problem.CodeValidation, "the note is invalid")
		p.Errors = []problem.FieldError{{Field: "text", Message: msg}}
		verify.WriteProblem(w, r, p)
		return
	}
	n := Note{ID: uuid.NewString(), Text: *req.Text, AuthorID: id.UserID, TenantID: id.TenantID, CreatedAt: h.now().UTC()}
	if err := h.store.Add(n); err != nil {
		verify.WriteProblem(w, r, problem.New(http.StatusConflict, problem.CodeConflict, "the tenant holds the maximum number of notes"))
		return
	}
	writeJSON(w, http.StatusCreated, n)
}

func validText(t *string) string {
	switch {
	case t == nil:
		return "required"
	case strings.TrimSpace(*t) == "":
		return "must not be blank"
	case utf8.RuneCountInString(*t) > MaxTextRunes:
		return "at most 2000 characters"
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, problem.New(http.StatusInternalServerError, problem.CodeInternal, "").JSON()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
