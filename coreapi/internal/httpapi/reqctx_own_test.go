package httpapi

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
)

// TestRequestContext: a request's counter and collector are found in its
// context directly and through a context derived from it, a parent's value
// stays visible, and the context with both costs one allocation.
func TestRequestContext(t *testing.T) {
	type other struct{}
	parent := context.WithValue(context.Background(), other{}, "v")
	rc := &requestContext{Context: parent}
	derived, cancel := context.WithCancel(rc)
	defer cancel()
	for _, ctx := range []context.Context{rc, derived} {
		if pgtrace.FromContext(ctx) != &rc.queries {
			t.Fatal("pgtrace.FromContext is not the request's counter")
		}
		if outbox.CollectorFrom(ctx) != &rc.writes {
			t.Fatal("outbox.CollectorFrom is not the request's collector")
		}
		if ctx.Value(other{}) != "v" {
			t.Fatal("the parent's value is lost")
		}
	}
	if pgtrace.FromContext(parent) != nil || outbox.CollectorFrom(parent) != nil {
		t.Fatal("a context without a counter or collector has one")
	}
	pgtrace.Tracer{}.TraceQueryStart(derived, nil, pgx.TraceQueryStartData{SQL: "BEGIN"})
	if rc.queries.Queries() != 1 || rc.queries.Transactions() != 1 {
		t.Fatalf("%d queries, %d transactions; want 1, 1", rc.queries.Queries(), rc.queries.Transactions())
	}
	var sink *requestContext
	if n := testing.AllocsPerRun(100, func() {
		sink = &requestContext{Context: parent}
		if sink.writes.Header() != "" {
			t.Fatal("a fresh collector names something")
		}
	}); n != 1 {
		t.Fatalf("%v allocations for a request's context, want 1", n)
	}
}
