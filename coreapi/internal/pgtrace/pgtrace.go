// Package pgtrace counts database round trips per request. The HTTP layer
// puts a Counter into the request's context; the pgx tracer installed on the
// pool adds to it for every query, batch and transaction begun with that
// context. The access log reports the count as db_queries. With tracing on,
// the same pool also gives every query a span (otelpgx), composed with the
// counter: pgx takes one tracer.
package pgtrace

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
)

// Counter accumulates the statements sent on behalf of one request. It is
// safe for concurrent use.
type Counter struct {
	queries  atomic.Int64
	txs      atomic.Int64
	prepares atomic.Int64
}

// Queries is the number of round trips: each query, each Exec (including a
// transaction's begin and commit) and each batch counts once.
func (c *Counter) Queries() int64 { return c.queries.Load() }

// Transactions is the number of transactions begun.
func (c *Counter) Transactions() int64 { return c.txs.Load() }

// Prepares is the number of statements prepared on the server: with the
// statement cache, the first use of a statement on a connection costs one
// extra round trip; after that it is 0.
func (c *Counter) Prepares() int64 { return c.prepares.Load() }

// ContextKey is the context key of a request's *Counter: a context type
// that carries one itself (the HTTP layer's request context, allocated
// once with the rest of the request's state) answers it from Value.
type ContextKey struct{}

// WithCounter returns a context that carries c.
func WithCounter(ctx context.Context, c *Counter) context.Context {
	return context.WithValue(ctx, ContextKey{}, c)
}

// FromContext returns the context's counter, or nil.
func FromContext(ctx context.Context) *Counter {
	c, _ := ctx.Value(ContextKey{}).(*Counter)
	return c
}

// Tracer is a pgx QueryTracer, BatchTracer and PrepareTracer that adds to
// the Counter in the query's context. A batch is one round trip, so it
// counts once.
type Tracer struct{}

// TraceQueryStart counts a query (and a transaction when it is a BEGIN).
func (Tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if c := FromContext(ctx); c != nil {
		c.queries.Add(1)
		if isBegin(data.SQL) {
			c.txs.Add(1)
		}
	}
	return ctx
}

// TraceQueryEnd does nothing.
func (Tracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart counts the batch as one round trip.
func (Tracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	if c := FromContext(ctx); c != nil {
		c.queries.Add(1)
	}
	return ctx
}

// TraceBatchQuery does nothing: the batch was counted once.
func (Tracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

// TraceBatchEnd does nothing.
func (Tracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TracePrepareStart does nothing: whether the statement was already
// prepared is known only at the end.
func (Tracer) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	return ctx
}

// TracePrepareEnd counts a prepare that went to the server.
func (Tracer) TracePrepareEnd(ctx context.Context, _ *pgx.Conn, data pgx.TracePrepareEndData) {
	if c := FromContext(ctx); c != nil && !data.AlreadyPrepared {
		c.prepares.Add(1)
	}
}

func isBegin(sql string) bool {
	return len(sql) >= 5 && strings.EqualFold(sql[:5], "begin")
}

// PoolOptions are the pool settings that come from configuration.
type PoolOptions struct {
	MaxConns int32
	ExecMode pgx.QueryExecMode
	// TracerProvider, when set, gives each query, batch, prepare, connect
	// and pool acquire made with a traced context a child span
	// (statements, never their arguments, nor the values a failed one's
	// error quotes); nil: no spans.
	TracerProvider trace.TracerProvider
}

// QueryTracer is the pool's tracer for o: the round-trip counter, and with
// a TracerProvider also otelpgx's spans.
func QueryTracer(o PoolOptions) pgx.QueryTracer {
	if o.TracerProvider == nil {
		return Tracer{}
	}
	return multitracer.New(Tracer{}, otelpgx.NewTracer(otelpgx.WithTracerProvider(redactingProvider{o.TracerProvider}),
		otelpgx.WithDisableConnectionDetailsInAttributes()))
}

// DefaultConnectTimeout bounds each new connection (TCP, TLS and the
// server's start-up answer) when the connection string sets no
// connect_timeout (nor PGCONNECT_TIMEOUT). Without it pgx waits as long as
// the operating system does: a database that does not answer (a network
// partition, a failover to a stale address, packets dropped) held every
// connection attempt for minutes, or for ever once the TCP connection was
// accepted, and the pool's attempts run on after the caller has given up.
const DefaultConnectTimeout = 5 * time.Second

// ParseConnConfig parses url as pgx does, with the connect timeout
// NewPool's connections get: a single connection (the migrate command's)
// to a database that does not answer gives up as the pool's do.
func ParseConnConfig(url string) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	boundConnect(cc)
	return cc, nil
}

// boundConnect sets DefaultConnectTimeout in cc when its connection string
// set no timeout (connect_timeout=0, "wait indefinitely" in libpq's words,
// counts as none).
func boundConnect(cc *pgx.ConnConfig) {
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
}

// NewPool opens a pgx pool on url with the tracer installed. It does not
// wait for the database: readiness reports that. A connection attempt
// gives up after the url's connect_timeout, DefaultConnectTimeout when it
// sets none (boundConnect).
func NewPool(ctx context.Context, url string, o PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	boundConnect(cfg.ConnConfig)
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.ExecMode != 0 {
		cfg.ConnConfig.DefaultQueryExecMode = o.ExecMode
	}
	cfg.ConnConfig.Tracer = QueryTracer(o)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	return pool, nil
}
