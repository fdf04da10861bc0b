package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-auth/tollgate/shared/adminhttp"
)

// Pinger is what readiness checks: the database (a DBProbe in serve,
// which does not queue behind the requests for a pool connection, and
// answers ErrReadOnly for a database that refuses writes).
type Pinger interface {
	Ping(ctx context.Context) error
}

// readyTimeout bounds /readyz's database steps (the ping, with its
// read-only check, and the schema's version, on the probe's connection):
// a database that has not answered by then is reported 503 with the
// reason. The Kubernetes readiness probe waits longer (its timeoutSeconds),
// so that this bound decides, not the kubelet's; deploy/k8s reads it from
// here and checks the manifests against it.
const readyTimeout = 2 * time.Second

// Admin is the operations server: /healthz (the process is alive),
// /readyz (the database answers and takes writes, its schema is recent enough, the other
// checks pass, and shutdown has not begun) and /metrics.
type Admin struct {
	srv      *http.Server
	db       Pinger
	schema   func(context.Context) error
	checks   []func() error
	stopping atomic.Bool
}

// AddCheck makes /readyz answer 503 with check's error while it fails
// (the signing keys' first sightings not looked up yet). Call before
// Serve.
func (a *Admin) AddCheck(check func() error) { a.checks = append(a.checks, check) }

// SetSchemaCheck makes /readyz also run check (schema.Check in serve) and
// answer 503 with its error while it fails. Call before Serve.
func (a *Admin) SetSchemaCheck(check func(context.Context) error) { a.schema = check }

// NewAdmin builds the admin server; gatherer is the registry /metrics
// serves.
func NewAdmin(db Pinger, gatherer prometheus.Gatherer) *Admin {
	a := &Admin{db: db}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	a.srv = adminhttp.Server(mux)
	return a
}

func (a *Admin) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.stopping.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := a.db.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		if errors.Is(err, ErrReadOnly) {
			_, _ = w.Write([]byte(ErrReadOnly.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("database unreachable\n"))
		return
	}
	if a.schema != nil {
		if err := a.schema(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
	}
	for _, check := range a.checks {
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// SetNotReady makes /readyz fail from now on (the first step of shutdown,
// so load balancers stop sending before the listener closes).
func (a *Admin) SetNotReady() { a.stopping.Store(true) }

// Serve serves on ln until Shutdown.
func (a *Admin) Serve(ln net.Listener) error {
	if err := a.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// Shutdown stops the admin server, waiting for requests until ctx expires.
func (a *Admin) Shutdown(ctx context.Context) error { return a.srv.Shutdown(ctx) }
