// Package natsconn reports the life of a service's NATS connection in its
// log, as both services' connection handlers do: each connection made or
// lost, the server's refusals of the credentials (natsauth), the servers
// the attempts cannot reach (natsreach), and the client's other errors,
// which its default handler prints to stderr, outside the log. The
// service's handlers call a Reporter beside what they do themselves.
//
// A server out of reach is one refused, a name that does not resolve, a
// failed TLS handshake: the client gives a failed dial to the reconnect
// error handler alone (ReconnectFailed), a failed handshake to no handler
// (Watch reads it), and refused credentials before the first connection
// to none either (Watch again).
package natsconn

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/shared/natsauth"
	"github.com/tollgate-auth/tollgate/shared/natsreach"
)

// Reporter logs the events of one connection.
type Reporter struct {
	log         *slog.Logger
	refusals    *natsauth.Reporter
	unreachable *natsreach.Reporter
}

// New returns a Reporter logging to log about the connection to url (one
// URL or several, comma-separated; the log names them masked). fix is what
// an operator does about refused credentials (natsauth.New); now is the
// clock (nil: time.Now).
func New(log *slog.Logger, url, fix string, now func() time.Time) *Reporter {
	return &Reporter{log: log, refusals: natsauth.New(log, fix, now), unreachable: natsreach.New(log, url, now)}
}

// Connected is told of each connection made (the connect and reconnect
// handlers): it ends the refusals and failed attempts going on, and logs
// msg.
func (r *Reporter) Connected(msg string) {
	r.refusals.Admitted()
	r.unreachable.Connected()
	r.log.Info(msg)
}

// Disconnected takes the error of the disconnect handler: none is the
// client's own Close or Drain (a shutdown), logged as such, not as a lost
// link.
func (r *Reporter) Disconnected(err error) {
	if err == nil {
		r.log.Info("nats connection closed")
		return
	}
	r.log.Warn("nats disconnected", "err", err)
}

// ReconnectFailed takes the error of the reconnect error handler: a
// failed attempt (natsreach.Reporter.Failed).
func (r *Reporter) ReconnectFailed(err error) { r.unreachable.Failed(err) }

// Error logs an error of the error handler that the service did not act
// on itself: a refusal of the credentials as natsauth reports them, any
// other as a warning.
func (r *Reporter) Error(err error) {
	if r.refusals.Refused(err) {
		return
	}
	r.log.Warn("nats", "err", err)
}

// Watch reports the failed attempts and refusals the client gives no
// handler, read from nc every poll until nc is closed or stop is closed
// (natsreach.Reporter.Watch).
func (r *Reporter) Watch(nc *nats.Conn, poll time.Duration, stop <-chan struct{}) {
	r.unreachable.Watch(nc, poll, stop, r.refusals)
}
