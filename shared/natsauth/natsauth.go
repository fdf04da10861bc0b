// Package natsauth reports a NATS server's refusal of a service's
// credentials in its log without flooding it.
//
// The services reconnect forever, through refused credentials too
// (nats.IgnoreAuthErrorAbort): a server restarting before its account
// resolver or auth callout is ready, a password rotated on one side only.
// The client reports the refusal at every attempt, about one a second
// for as long as it lasts, and a handler that logged each wrote that many
// lines. A Reporter logs one error when the refusal starts, naming it and
// what to fix, a reminder at most every Remind while it lasts, and one
// line when a connection is made again; the service's connected gauge is
// the signal meanwhile.
package natsauth

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Remind is the least time between two lines about one refusal.
const Remind = time.Minute

// Refusal reports whether err is a server's refusal of the credentials:
// an authorization violation, or an authentication expired or revoked.
// The client's asynchronous errors are its sentinels; the last error of
// a connection refused before it ever connected is the server's text.
func Refusal(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if strings.HasSuffix(msg, strings.TrimPrefix(e.Error(), "nats: ")) {
			return true
		}
	}
	return false
}

// Spell follows a condition that goes on across many attempts of a
// connection (refused credentials here, a server out of reach in
// natsreach), so that its reporter logs it when it starts, reminds of it
// at most every Remind while it lasts, and logs its end.
type Spell struct {
	now func() time.Time

	mu    sync.Mutex
	since time.Time // when the spell started (zero: none going on)
	said  time.Time // the last line about it
	times int       // attempts it took since
}

// NewSpell returns a Spell on the clock now (nil: time.Now).
func NewSpell(now func() time.Time) *Spell {
	if now == nil {
		now = time.Now
	}
	return &Spell{now: now}
}

// Seen counts one more attempt the condition took and tells the caller
// what to log: first when it starts a spell, remind when a reminder is
// due; since and times describe the spell.
func (s *Spell) Seen() (first, remind bool, since time.Time, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.times++
	switch {
	case s.since.IsZero():
		s.since, s.said, s.times = now, now, 1
		first = true
	case now.Sub(s.said) >= Remind:
		s.said = now
		remind = true
	}
	return first, remind, s.since, s.times
}

// End ends the spell going on, if any (ended), reporting how long it
// lasted and how many attempts it took.
func (s *Spell) End() (ended bool, lasted time.Duration, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() {
		return false, 0, 0
	}
	lasted, times = s.now().Sub(s.since).Round(time.Millisecond), s.times
	s.since, s.said, s.times = time.Time{}, time.Time{}, 0
	return true, lasted, times
}

// Reporter logs the refusals of one connection's credentials.
type Reporter struct {
	log   *slog.Logger
	fix   string
	spell *Spell
}

// New returns a Reporter logging to log; fix tells the operator what to
// do (which user, where its password is set). now is the clock (nil:
// time.Now).
func New(log *slog.Logger, fix string, now func() time.Time) *Reporter {
	return &Reporter{log: log, fix: fix, spell: NewSpell(now)}
}

// Refused takes an error of the connection (every one its
// nats.ErrorHandler is given) and reports whether it is a refusal of the
// credentials, which the Reporter has logged or counted.
func (r *Reporter) Refused(err error) bool {
	if !Refusal(err) {
		return false
	}
	switch first, remind, since, times := r.spell.Seen(); {
	case first:
		r.log.Error("nats refuses this service's credentials; reconnecting until it admits them: "+r.fix, "err", err)
	case remind:
		r.log.Error("nats still refuses this service's credentials: "+r.fix,
			"since", since, "refusals", times, "err", err)
	}
	return true
}

// Admitted is told of each connection made (the connect and reconnect
// handlers): it logs the end of a refusal going on.
func (r *Reporter) Admitted() {
	if ended, lasted, times := r.spell.End(); ended {
		r.log.Info("nats admits this service's credentials again", "refused_for", lasted, "refusals", times)
	}
}
