package pgtrace

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/silent"
)

func TestCounter(t *testing.T) {
	db := dbtest.New(t)
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c := &Counter{}
	ctx := WithCounter(context.Background(), c)

	var n int
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 1 || c.Transactions() != 0 || c.Prepares() != 1 {
		t.Fatalf("after one query: %d queries, %d tx, %d prepares; want 1, 0, 1", c.Queries(), c.Transactions(), c.Prepares())
	}
	// The same statement again on a one-connection pool is cached.
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 2 || c.Prepares() != 1 {
		t.Fatalf("after a cached query: %d queries, %d prepares; want 2, 1", c.Queries(), c.Prepares())
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`SELECT 2`)
	b.Queue(`SELECT 3`)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 3 {
		t.Fatalf("a batch of 3 counted as %d round trips, want 1", c.Queries()-2)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// begin + select + commit
	if c.Queries() != 6 || c.Transactions() != 1 {
		t.Fatalf("after a transaction: %d queries, %d tx; want 6, 1", c.Queries(), c.Transactions())
	}
	// Without a counter in the context nothing is counted (and nothing fails).
	if err := pool.QueryRow(context.Background(), `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 6 {
		t.Fatalf("a query without the counter was counted")
	}
}

func TestPoolCollector(t *testing.T) {
	db := dbtest.New(t)
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewPoolCollector(pool))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			got[mf.GetName()] = m.GetGauge().GetValue()
		} else {
			got[mf.GetName()] = m.GetCounter().GetValue()
		}
	}
	if got["coreapi_db_pool_max_conns"] != 9 || got["coreapi_db_pool_acquires_total"] < 1 || got["coreapi_db_pool_conns"] < 1 {
		t.Fatalf("metrics = %v", got)
	}
}

// TestConnectTimeout: a connection string without connect_timeout gets
// DefaultConnectTimeout, so that a connection attempt to a database that
// accepts and never answers gives up (it waited for as long as the
// connection stayed open: for ever); a timeout the operator set, in the
// URL or PGCONNECT_TIMEOUT, is kept. ParseConnConfig (a single
// connection's) follows the same rule.
func TestConnectTimeout(t *testing.T) {
	addr := silent.Addr(t)
	open := func(t *testing.T, query string) *pgxpool.Pool {
		t.Helper()
		pool, err := NewPool(context.Background(), "postgres://tollgate@"+addr+"/tollgate"+query, PoolOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return pool
	}
	for _, tc := range []struct {
		name, query, env string
		want             time.Duration
	}{
		{"unset", "", "", DefaultConnectTimeout},
		{"zero", "?connect_timeout=0", "", DefaultConnectTimeout},
		{"set in the url", "?connect_timeout=1", "", time.Second},
		{"set in the environment", "", "2", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("PGCONNECT_TIMEOUT", tc.env)
			}
			if got := open(t, tc.query).Config().ConnConfig.ConnectTimeout; got != tc.want {
				t.Errorf("ConnectTimeout = %s, want %s", got, tc.want)
			}
			cc, err := ParseConnConfig("postgres://tollgate@" + addr + "/tollgate" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if cc.ConnectTimeout != tc.want {
				t.Errorf("ParseConnConfig: ConnectTimeout = %s, want %s", cc.ConnectTimeout, tc.want)
			}
		})
	}

	// A ping without a deadline of its own gives up at the bound.
	pool := open(t, "")
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- pool.Ping(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("ping of a database that never answers succeeded")
		}
		if d := time.Since(start); d < DefaultConnectTimeout-time.Second {
			t.Errorf("ping gave up after %s, before DefaultConnectTimeout (%s): %v", d, DefaultConnectTimeout, err)
		}
	case <-time.After(DefaultConnectTimeout + 10*time.Second):
		t.Fatalf("ping of a database that never answers still waiting after %s", time.Since(start))
	}
}

// TestSpans: with a TracerProvider, a batch gets a span of its own beside
// its statements' and counts as one round trip; no span (connect, acquire,
// query, batch) names the database's host, port, user or database, and
// none carries a statement's arguments.
func TestSpans(t *testing.T) {
	db := dbtest.New(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 1, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c := &Counter{}
	ctx, span := tp.Tracer("test").Start(WithCounter(context.Background(), c), "request")
	var n int
	if err := pool.QueryRow(ctx, `SELECT $1::int`, 424242).Scan(&n); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`SELECT $1::int`, 434343)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	span.End()
	if c.Queries() != 2 {
		t.Fatalf("a query and a batch counted as %d round trips, want 2", c.Queries())
	}
	names := map[string]int{}
	for _, s := range exp.GetSpans() {
		names[s.Name]++
		for _, a := range s.Attributes {
			switch k := string(a.Key); {
			case k == "server.address" || k == "server.port" || k == "user.name" || k == "db.user" ||
				k == "db.namespace" || k == "db.name" || strings.HasPrefix(k, "net."):
				t.Errorf("span %q carries %s=%s", s.Name, k, a.Value.String())
			case strings.Contains(a.Value.String(), "424242") || strings.Contains(a.Value.String(), "434343"):
				t.Errorf("span %q carries an argument in %s=%s", s.Name, k, a.Value.String())
			}
		}
	}
	for _, want := range []string{"connect", "pool.acquire", "batch start"} {
		if names[want] == 0 {
			t.Errorf("no %q span among %v", want, names)
		}
	}
}

// TestFailedStatementSpansHoldNoArguments: a statement that fails records
// its error on its span (status and exception event), and PostgreSQL's
// and pgx's errors quote the statement's values (an address given where a
// UUID was due), so the trace back end received what coreapi's log never
// holds (the request failed line redacts them). The error is recorded
// redacted as the log's is: still an error, with its SQLSTATE and kind,
// without the values.
func TestFailedStatementSpansHoldNoArguments(t *testing.T) {
	db := dbtest.New(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 1, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	var s string
	// The server's message quotes the value (22P02).
	if err := pool.QueryRow(ctx, `SELECT $1::text::uuid::text`, "cast.address@example.com").Scan(&s); err == nil {
		t.Fatal("no error casting an address to a uuid")
	}
	// pgx's own error, before anything is sent, quotes it too.
	if err := pool.QueryRow(ctx, `SELECT $1::uuid::text`, "encode.address@example.com").Scan(&s); err == nil {
		t.Fatal("no error encoding an address as a uuid")
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT $1::text::uuid::text`, "batch.address@example.com")
	if err := pool.SendBatch(ctx, b).Close(); err == nil {
		t.Fatal("no error from a batch casting an address to a uuid")
	}
	span.End()
	var failed, sqlstate int
	for _, s := range exp.GetSpans() {
		texts := []string{s.Name, s.Status.Description}
		for _, a := range s.Attributes {
			texts = append(texts, a.Value.String())
			if a.Key == "db.response.status_code" || a.Key == "pgx.sql_state" || strings.Contains(string(a.Key), "sql_state") {
				sqlstate++
			}
		}
		for _, ev := range s.Events {
			texts = append(texts, ev.Name)
			for _, a := range ev.Attributes {
				texts = append(texts, a.Value.String())
			}
		}
		for _, text := range texts {
			if strings.Contains(text, "address@example.com") {
				t.Errorf("span %q carries a statement's value: %s", s.Name, text)
			}
		}
		if s.Status.Code.String() == "Error" {
			failed++
			if !strings.Contains(s.Status.Description, "invalid input syntax for type uuid") &&
				!strings.Contains(s.Status.Description, "unable to encode") {
				t.Errorf("span %q failed with the description %q, want what failed", s.Name, s.Status.Description)
			}
			if len(s.Events) == 0 || s.Events[0].Name != "exception" {
				t.Errorf("span %q failed without its exception event: %v", s.Name, s.Events)
			}
		}
	}
	if failed < 3 {
		t.Errorf("%d failed spans, want at least one per failed statement (3)", failed)
	}
	if sqlstate == 0 {
		t.Error("no failed span names its SQLSTATE")
	}
}

// TestFailedConnectSpanNamesNoServer: a connection that fails records its
// error on the connect span, and pgconn's error names the user, the
// database, the host and the port, which the spans' attributes leave out
// (otelpgx.WithDisableConnectionDetailsInAttributes, TestSpans). The span
// says that the connection failed, and why, without them.
func TestFailedConnectSpanNamesNoServer(t *testing.T) {
	cfg, err := pgx.ParseConfig(dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	const database = "tollgate_no_such_database_x7"
	noDB, err := url.Parse(dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	noDB.Path = "/" + database
	// A port nothing listens on: the one of a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	refused := *noDB
	refused.Host = "127.0.0.1:" + closedPort
	for _, tt := range []struct {
		name, url, why string
		names          []string
	}{
		{"no such database", noDB.String(), "3D000",
			[]string{database, "user=" + cfg.User, cfg.Host + ":" + strconv.Itoa(int(cfg.Port))}},
		{"connection refused", refused.String(), "connection refused",
			[]string{database, "user=" + cfg.User, "127.0.0.1:" + closedPort}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			pool, err := NewPool(context.Background(), tt.url, PoolOptions{MaxConns: 1, TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			ctx, span := tp.Tracer("test").Start(context.Background(), "request")
			var n int
			if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&n); err == nil {
				t.Fatal("a query succeeded")
			}
			span.End()
			var connect bool
			for _, s := range exp.GetSpans() {
				texts := []string{s.Status.Description}
				for _, a := range s.Attributes {
					texts = append(texts, a.Value.String())
				}
				for _, ev := range s.Events {
					for _, a := range ev.Attributes {
						texts = append(texts, a.Value.String())
					}
				}
				for _, text := range texts {
					for _, name := range tt.names {
						if strings.Contains(text, name) {
							t.Errorf("span %q names %q: %s", s.Name, name, text)
						}
					}
				}
				if s.Name == "connect" {
					connect = true
					if s.Status.Code.String() != "Error" || !strings.Contains(s.Status.Description, tt.why) {
						t.Errorf("connect span status %v %q, want an error saying %q", s.Status.Code, s.Status.Description, tt.why)
					}
				}
			}
			if !connect {
				t.Fatal("no connect span")
			}
		})
	}
}
