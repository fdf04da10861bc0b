package outbox

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// The bound of what a Collector reports: at most MaxReported subjects,
// their list at most MaxReportedBytes long. A user subject is 57 bytes,
// an API key's 39, so the count bounds it first (64 user subjects make
// 3,711 bytes with their separators); the byte bound holds for subjects
// up to invalidation.MaxSubjectLen. The writes that name many subjects
// are the ones that revoke every API key of an account or of a member
// (DELETE /users/{id}, a service account or one of its secrets deleted,
// a password reset that proves an address the account had never proven,
// which also names each service account it created): one subject per
// key, beside the user's own. Beyond the bound the list is
// auth.invalidate.all (Collector.Header).
const (
	MaxReported      = 64
	MaxReportedBytes = 4096
)

// Collector records the distinct subjects of the outbox rows written with
// one request's context (Write, Queue), so that the request's answer can
// name what the request invalidated (invalidation.HeaderInvalidated). A
// subject is recorded when its row is written, not when its transaction
// commits: one rolled back is still reported, which costs an eviction (a
// cache miss), never a stale entry. auth.keys.changed is not recorded: it
// names no cached entry.
//
// The zero value is ready; a nil *Collector records nothing. It is safe
// for concurrent use.
type Collector struct {
	mu       sync.Mutex
	subjects []string
	size     int // bytes of the list: the subjects and a separator each
	all      bool
}

// ContextKey is the context key of a request's *Collector: a context type
// that carries one itself (the HTTP layer's request context, allocated
// once with the rest of the request's state) answers it from Value.
type ContextKey struct{}

// WithCollector returns a context that carries c.
func WithCollector(ctx context.Context, c *Collector) context.Context {
	return context.WithValue(ctx, ContextKey{}, c)
}

// CollectorFrom returns the context's collector, or nil.
func CollectorFrom(ctx context.Context) *Collector {
	c, _ := ctx.Value(ContextKey{}).(*Collector)
	return c
}

// add records the subjects of rows (under the bound: past it, or for an
// auth.invalidate.all row, the collector reports everything).
func (c *Collector) add(rows []Row) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		switch {
		case c.all:
			return
		case r.Subject == invalidation.SubjectKeysChanged || slices.Contains(c.subjects, r.Subject):
		case r.Subject == invalidation.SubjectAll || len(c.subjects) == MaxReported || c.size+len(r.Subject) > MaxReportedBytes:
			c.all, c.subjects, c.size = true, nil, 0
		default:
			c.subjects = append(c.subjects, r.Subject)
			c.size += len(r.Subject) + 1
		}
	}
}

// Header returns what the request invalidated, as the value of
// invalidation.HeaderInvalidated: its subjects separated by a space, in
// the order first written; auth.invalidate.all past the bound
// (MaxReported, MaxReportedBytes); "" when nothing was written.
//
// Past the bound no narrower subject would do: a user subject names the
// user's entries in every tenant (a password reset, a session's
// revocation reach them all), so the caller's tenant does not cover it.
func (c *Collector) Header() string {
	if c == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.all {
		return invalidation.SubjectAll
	}
	return strings.Join(c.subjects, " ")
}
