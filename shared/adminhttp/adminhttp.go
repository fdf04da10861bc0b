// Package adminhttp is the HTTP server of a service's admin listener:
// health, readiness, metrics and (when enabled) profiles. The listener is
// reachable by whatever can reach the pod's admin port, so every wait on a
// client is bounded.
package adminhttp

import (
	"net/http"
	"time"
)

// The bounds of an admin connection. Admin requests carry no body, so a
// request is read whole within ReadTimeout. A kept-alive connection that
// sends nothing for IdleTimeout is closed: a scraper or a probe opens
// another, while a client that opens many and sends nothing no longer holds
// them (and their file descriptors) for ever. No write timeout: a CPU
// profile streams for as long as it was asked for.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 64 << 10
)

// Server returns the admin server of h.
func Server(h http.Handler) *http.Server { return newServer(h, IdleTimeout) }

func newServer(h http.Handler, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}
