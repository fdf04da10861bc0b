// Package natsreach reports in a service's log a NATS server its
// connection cannot reach, without flooding it.
//
// The services connect in the background and reconnect forever
// (natsdial, nats.RetryOnFailedConnect). An attempt that fails before the
// server has read the credentials (the connection refused, a host name
// that does not resolve, a TLS handshake that fails, a server that does
// not answer) was named nowhere: the client gives a failed dial to its
// reconnect error handler alone, which the services did not set, and a
// failed handshake to no handler at all. A service started with NATS out
// of reach logged nothing of it (coreapi's relay: "nats not connected",
// with no server named). A Reporter logs one warning when attempts start
// failing, naming the server URL (its credentials masked) and the cause,
// a reminder at most every natsauth.Remind while they go on, and one line when a
// connection is made; the service's connected gauge is the signal
// meanwhile. Refused credentials are natsauth's to report.
package natsreach

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/natsauth"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
)

// Reporter logs the failed connection attempts of one connection.
type Reporter struct {
	log   *slog.Logger
	url   string // masked
	spell *natsauth.Spell
}

// New returns a Reporter logging to log about the server (or
// comma-separated servers) of url, which it names with each URL masked as
// the services print a URL setting (envconfig.MaskURL). now is the clock
// (nil: time.Now).
func New(log *slog.Logger, url string, now func() time.Time) *Reporter {
	return &Reporter{log: log, url: MaskURLs(url), spell: natsauth.NewSpell(now)}
}

// MaskURLs is url, one URL or a comma-separated list (as nats.Connect
// takes it), with each URL masked by envconfig.MaskURL.
func MaskURLs(url string) string {
	parts := strings.Split(url, ",")
	for i, s := range parts {
		parts[i] = envconfig.MaskURL(strings.TrimSpace(s))
	}
	return strings.Join(parts, ",")
}

// Failed takes the error of a failed attempt: every one the connection's
// nats.ReconnectErrHandler is given, and those Watch reads. natsdial's
// refusal of nats.Connect's own pass is none, nor is a refusal of the
// credentials (the server was reached: natsauth reports it).
func (r *Reporter) Failed(err error) {
	if !failure(err) {
		return
	}
	switch first, remind, since, times := r.spell.Seen(); {
	case first:
		r.log.Warn("nats cannot connect to its server; trying again until it can", "url", r.url, "err", err)
	case remind:
		r.log.Warn("nats still cannot connect to its server", "url", r.url,
			"since", since, "failures", times, "err", err)
	}
}

// failure reports whether err, read from a connection not connected, is
// an attempt's failure to reach the server.
func failure(err error) bool {
	return err != nil && !errors.Is(err, natsdial.ErrNotYet) && !natsauth.Refusal(err) &&
		!errors.Is(err, nats.ErrPermissionViolation) && !errors.Is(err, nats.ErrMaxSubscriptionsExceeded)
}

// Connected is told of each connection made (the connect and reconnect
// handlers): it logs the end of the failures going on.
func (r *Reporter) Connected() {
	if ended, lasted, times := r.spell.End(); ended {
		r.log.Info("nats connected to its server after failed attempts", "url", r.url,
			"failed_for", lasted, "failures", times)
	}
}

// Watch reports the failed attempts the client gives no handler, read
// from nc's last error every poll while it is not connected, until nc is
// closed or stop is closed: a handshake that fails after the dial (TLS,
// a server that does not answer, one that speaks no NATS) leaves its
// error there until the next attempt, at least the reconnect wait later.
// A failed dial goes to the reconnect error handler and leaves none.
//
// Until nc's first connection, the same reads go to refusals (nil:
// none), which reports those that refuse the credentials: the client
// gives its handlers no authorization error before it has connected once
// (nats.RetryOnFailedConnect), so a service started with credentials the
// server refuses said nothing of it. One poll serves both, each
// reporter keeping to its own errors (Failed takes no refusal, Refused
// nothing else), where two, each with its goroutine and ticker, read
// every error twice.
func (r *Reporter) Watch(nc *nats.Conn, poll time.Duration, stop <-chan struct{}, refusals *natsauth.Reporter) {
	t := time.NewTicker(poll)
	defer t.Stop()
	var last error
	for {
		// Read before the state: an error read after the connection was
		// made would be reported after the connect handler's Connected
		// and Admitted. An error already there while connected (a
		// refused subscription) is no attempt's.
		err := nc.LastError()
		switch {
		case nc.IsClosed():
			return
		case nc.IsConnected():
			last = err
			// From the first connection on, the error handler is
			// given the refusals.
			refusals = nil
		case err != last:
			// Counted once however many polls find it; the next attempt
			// clears it (a failed dial) or sets it anew.
			last = err
			if refusals != nil && err != nil {
				refusals.Refused(err)
			}
			r.Failed(err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
