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
// up to invalidation.MaxSubjectLen. The bound applies to the list
// reported: a row covered by a subject listed (Row.CoveredBy) is not in
// it. Beyond the bound the list is auth.invalidate.all (Collector.Header),
// which has the proxy that forwarded the request purge its whole cache.
//
// The writes that name many subjects are the ones that revoke every API
// key of an account or of a member (DELETE /users/{id}, a service account
// or one of its secrets deleted, a password reset that proves an address
// the account had never proven, which also names each service account it
// created): one subject per key, each covered by the subject of the user
// the key acts as, which the same write names, so the keys' are left out.
// A tenant admin revoking many keys at once (a member with 500 tenant
// keys removed) made the proxy they use drop every tenant's entries.
//
// MaxCovered bounds what a Collector holds of the rows whose covering
// subject it has not seen (yet): past it the list is
// auth.invalidate.all, as past the bound.
const (
	MaxReported      = 64
	MaxReportedBytes = 4096
	MaxCovered       = 4096
)

// Collector records the distinct subjects of the outbox rows written with
// one request's context (Write, Queue), so that the request's answer can
// name what the request invalidated (invalidation.HeaderInvalidated). A
// subject is recorded when its row is written, not when its transaction
// commits: one rolled back is still reported, which costs an eviction (a
// cache miss), never a stale entry. auth.keys.changed is not recorded: it
// names no cached entry. A row whose Row.CoveredBy the request also wrote
// (before or after it) is not reported: evicting the covering subject
// evicts what it names.
//
// The zero value is ready; a nil *Collector records nothing. It is safe
// for concurrent use.
type Collector struct {
	mu sync.Mutex
	// listed are the subjects to report, in the order first written,
	// each with the subject that covers it ("": none). No cover of one
	// is in plain: a subject written plain drops the rows it covers.
	listed []listed
	// plain are the subjects of listed without a cover (at most
	// MaxReported), size the bytes of their list: the subjects and a
	// separator each.
	plain []string
	size  int
	// covered indexes the subjects of listed with a cover (at most
	// MaxCovered); made with the first.
	covered map[string]struct{}
	all     bool
}

// listed is a subject a Collector reports, unless cover is written too.
type listed struct{ subject, cover string }

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

// add records the subjects of rows (under the bounds: past them, or for
// an auth.invalidate.all row, the collector reports everything).
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
		case r.Subject == invalidation.SubjectKeysChanged:
		case r.Subject == invalidation.SubjectAll:
			c.everything()
		case r.CoveredBy != "":
			c.addCovered(r.Subject, r.CoveredBy)
		default:
			c.addPlain(r.Subject)
		}
	}
}

// addPlain records subject, which no other covers, and drops the rows it
// covers.
func (c *Collector) addPlain(subject string) {
	if slices.Contains(c.plain, subject) {
		return
	}
	if len(c.plain) == MaxReported || c.size+len(subject) > MaxReportedBytes {
		c.everything()
		return
	}
	c.plain = append(c.plain, subject)
	c.size += len(subject) + 1
	if _, ok := c.covered[subject]; ok {
		// Written covered first: reported now whatever its cover, where
		// it was first written.
		delete(c.covered, subject)
		c.listed[slices.IndexFunc(c.listed, func(l listed) bool { return l.subject == subject })].cover = ""
	} else {
		c.listed = append(c.listed, listed{subject: subject})
	}
	if len(c.covered) > 0 {
		c.listed = slices.DeleteFunc(c.listed, func(l listed) bool {
			if l.cover != subject {
				return false
			}
			delete(c.covered, l.subject)
			return true
		})
	}
}

// addCovered records subject unless it is recorded already or its cover
// is.
func (c *Collector) addCovered(subject, cover string) {
	if _, ok := c.covered[subject]; ok || slices.Contains(c.plain, cover) || slices.Contains(c.plain, subject) {
		return
	}
	if len(c.covered) == MaxCovered {
		c.everything()
		return
	}
	if c.covered == nil {
		c.covered = make(map[string]struct{})
	}
	c.covered[subject] = struct{}{}
	c.listed = append(c.listed, listed{subject: subject, cover: cover})
}

// everything makes the collector report auth.invalidate.all from now on.
func (c *Collector) everything() {
	c.all, c.listed, c.plain, c.size, c.covered = true, nil, nil, 0, nil
}

// Header returns what the request invalidated, as the value of
// invalidation.HeaderInvalidated: its subjects separated by a space, in
// the order first written, less those covered by another listed
// (Row.CoveredBy); auth.invalidate.all past the bound (MaxReported,
// MaxReportedBytes, applied to that list) or MaxCovered; "" when nothing
// was written.
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
	switch {
	case c.all, len(c.listed) > MaxReported:
		return invalidation.SubjectAll
	case len(c.listed) == 0:
		return ""
	case len(c.listed) == 1:
		return c.listed[0].subject
	}
	n := len(c.listed) - 1
	for _, l := range c.listed {
		n += len(l.subject)
	}
	if n > MaxReportedBytes {
		return invalidation.SubjectAll
	}
	var b strings.Builder
	b.Grow(n)
	for i, l := range c.listed {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l.subject)
	}
	return b.String()
}
