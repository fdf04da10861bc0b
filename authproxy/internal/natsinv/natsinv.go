// Package natsinv applies coreapi's invalidation events (NATS subjects
// auth.invalidate.user.<id>, .tenant.<id>, .apikey.<id>, .all) to the
// proxy's caches, and
// its key-change events (auth.keys.changed) to the key set. It
// reconnects forever; while disconnected the caches trust entries only for
// a bounded staleness, and on reconnect everything is purged and the key
// set refetched because events may have been missed.
//
// A link can die without closing (a partition, a host gone, a NAT entry
// dropped): nothing arrives and nothing says so. The client pings the
// server every PingInterval and calls the link dead when maxPingsOut+1
// pings in a row go unanswered, so the outage is noticed within
// DeadAfter(PingInterval), and it is reported to the caches as starting
// that long before it was noticed: the last moment the feed was known to
// deliver.
//
// A connection is called live (the caches purged and trusted again) only
// once the server has confirmed the subscription on it, and never while
// the server refuses it (its subject permissions): until then events
// could be lost. Nor while its permissions deny a kind of invalidation
// under the subscription's wildcard: the server accepts the subscription
// and drops those events without a word, so each connection also asks
// for a subscription to each kind, dropped at once, whose refusal says so.
//
// A live connection is not enough: coreapi's relays may be unable to
// publish (their NATS credentials refused, their link to another node of
// the cluster cut, their statements refused) while the proxy hears nothing and
// suspects nothing. The relays publish a heartbeat row through the outbox
// (auth.outbox.heartbeat, every OUTBOX_HEARTBEAT_INTERVAL), behind the
// invalidations committed before it; with HeartbeatTimeout set, a live
// feed that brings none for that long is called stale: the caches trust
// their entries for the staleness bound counted from the last heartbeat,
// as in an outage, until the next one arrives. That heartbeat proves no
// event before it was applied: another relay may still hold an older row
// (claimed FOR UPDATE SKIP LOCKED, its publication failing), a relay may
// have published it into a NATS node the proxy does not hear, and the
// heartbeat's subscription is served apart from the invalidations', so it
// can be acted on before an event that came ahead of it. So its arrival
// ends the staleness as a reconnection does: the caches are purged and
// the key set is refetched.
//
// Heartbeats alone miss one relay cut off: in a NATS cluster, a relay
// connected to a node that lost its route to the proxy's has its
// publications accepted (it marks its rows published) while none reaches
// the proxy, and the heartbeats the other relays publish keep the caches
// trusted. So each relay also publishes a beat of its own straight to NATS
// (auth.outbox.relay, every OUTBOX_HEARTBEAT_INTERVAL, naming it), and each
// heartbeat row lists the relays registered as publishing when it was
// written. A live feed on which a listed relay has not been heard for
// HeartbeatTimeout is stale too, its bound counted from that relay's last
// beat; the time counts from the latest of that beat, the relay's listing
// and the feed's going live, so a new relay or a new connection is given
// the timeout to be heard. The staleness ends, with the same purge, once
// the relay is heard again or a row no longer lists it. A server that
// refuses the subscription to auth.outbox.relay (a deployment that has not
// granted it) leaves relay beats unwatched rather than every proxy stale.
package natsinv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/natsconn"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
)

// Evicter is what an invalidation evicts from: the projection cache, and
// with it the streams its entries authorized (streams.Invalidator).
type Evicter interface {
	InvalidateUser(id string)
	InvalidateTenant(id string)
	InvalidateAll()
}

// Target is what invalidations act on (the projection cache).
type Target interface {
	Evicter
	Disconnected(at time.Time)
	Reconnected()
}

// Evict evicts from t what subject names, and an API key's entry through
// key (nil: no key is cached), as its event does, and returns the kind
// counted in authproxy_invalidations_received_total: user, tenant, all or
// apikey. A subject it does not understand evicts nothing and returns "":
// what that means is the caller's (an event purges everything; a subject
// coreapi's answer names, the server ignores). The subscriber and the
// server (a change the proxy forwarded itself, named by coreapi's answer)
// both evict through it.
func Evict(t Evicter, key func(publicID string), subject string) string {
	kind, id := invalidation.Parse(subject)
	switch kind {
	case invalidation.KindUser:
		t.InvalidateUser(id)
		return "user"
	case invalidation.KindTenant:
		t.InvalidateTenant(id)
		return "tenant"
	case invalidation.KindAll:
		t.InvalidateAll()
		return "all"
	case invalidation.KindAPIKey:
		if key != nil {
			key(id)
		}
		return "apikey"
	}
	return ""
}

// Subscriber owns the NATS connection.
type Subscriber struct {
	nc  *nats.Conn
	t   Target
	key func(string)
	// keys refetches the key set (Options.KeysChanged; nil: not
	// subscribed).
	keys func(keys string)
	log  *slog.Logger
	m    *metrics.Metrics
	now  func() time.Time
	// live is set while the feed is known live; it makes the report of a
	// connection once per outage: a connection may be confirmed twice
	// (the first connection's handler still flushing when the client has
	// reconnected, the reconnection's handler confirming it too), and a
	// second report would purge the caches filled since.
	live atomic.Bool
	// reported is set once the caches have been told (Connected).
	reported atomic.Bool
	// linkMu orders the reports of connections and disconnections: the
	// client runs its handlers on its callback goroutine, the subscriber
	// looks for silence on another.
	linkMu sync.Mutex
	// subscribedC is closed once Connect has made the subscriptions (or
	// given up): the client's handler of the first connection waits for
	// it before it asks the server to confirm them.
	subscribedC chan struct{}
	// awaited (under linkMu) is the last error the client had read from
	// the server when it confirmed a new connection's subscriptions (a
	// flush returned), if any: it may be a refusal of one of them, and
	// the connection is reported live only once the error handler has
	// taken it in (confirm, answered). nil: none awaited.
	awaited error
	// inv is the subscription to auth.invalidate.>, ks the one to
	// auth.keys.changed (nil without KeysChanged).
	inv, ks atomic.Pointer[nats.Subscription]
	// hb is the subscription to auth.outbox.heartbeat, rl the one to
	// auth.outbox.relay (nil without HeartbeatTimeout).
	hb, rl atomic.Pointer[nats.Subscription]
	// dropMu guards purgedAt and refetchedAt: the subscriptions' counts of
	// dropped events when the caches were last purged, and the key set
	// last refetched, for them.
	dropMu      sync.Mutex
	purgedAt    int
	refetchedAt int
	// eventLogs bounds the lines written for what events carry
	// (logEvent): how many come is the publishers' choice.
	eventLogs logging.Budget
	// keysGap is Options.KeysChangedGap. On the callback goroutine of the
	// auth.keys.changed subscription only: keysAt is when KeysChanged was
	// last called for an event; folded is set while events are folded
	// into a later one (keysChanged), and foldedKeys is the digest they
	// all named ("" when they differ).
	keysGap    time.Duration
	keysAt     time.Time
	folded     bool
	foldedKeys string
	done       chan struct{} // closed by Close
	stop       sync.Once
	watcher    sync.WaitGroup // watchDrops and the watch of failed handshakes (and of the first connection's refusals)
	// dead is DeadAfter(PingInterval): how far back the start of an
	// outage is put when it is noticed.
	dead time.Duration
	// denied is set when the server refused the subscription to
	// invalidations (its permissions): the connection is up but no event
	// comes, so it is not reported live until the next connection.
	denied atomic.Bool
	// hbTimeout is Options.HeartbeatTimeout (0: neither heartbeats nor
	// relay beats watched).
	// hbAt is when the last heartbeat arrived, or the feed went live,
	// in nanoseconds since origin (Options.Now when Connect began: on the
	// monotonic clock, as time.Now's readings are; unix nanoseconds
	// followed the wall clock, and one set back an hour hid an hour of
	// silence); stale (under linkMu) is set while the live
	// feed is called stale for want of one, or of a listed relay's beat.
	hbTimeout time.Duration
	hbAt      atomic.Int64
	origin    time.Time
	stale     bool
	// relayDenied is set when the server refused the subscription to
	// auth.outbox.relay: no relay beat comes on this connection, and none
	// is waited for (the feed is never stale for a relay's silence).
	relayDenied atomic.Bool
	// Under linkMu: heard is when each relay's beat last arrived (at most
	// maxRelaysHeard of them); listed holds the relays the last heartbeat
	// row listed, each with when it was first listed in its current
	// continuous listing; liveAt is when the feed last went live. warned
	// holds the unheard relays, and warnedSilent is set for the silence,
	// already named in a warning since the feed turned stale.
	heard  map[string]time.Time
	listed map[string]time.Time
	// unlisted is how many relays the last heartbeat row could not list
	// (invalidation.MaxRelaysListed: the row's own count, and the names
	// past the bound), since unlistedAt: their beats cannot be expected,
	// and the feed is stale while they last, as for an unheard relay
	// (unheard names them unlistedRelays).
	unlisted     int
	unlistedAt   time.Time
	liveAt       time.Time
	warned       map[string]bool
	warnedSilent bool
	// interval is the longest OUTBOX_HEARTBEAT_INTERVAL the last
	// intervalRows heartbeat rows announced (under linkMu; 0: none yet),
	// checked against hbTimeout; intervals holds those rows' (a ring,
	// next its next slot).
	interval  time.Duration
	intervals [intervalRows]time.Duration
	next      int
	// checked is Options.checked.
	checked func()
}

// intervalRows: the heartbeat timeout is checked against the longest
// interval of this many last rows, not the last row's alone. Replicas
// with different OUTBOX_HEARTBEAT_INTERVAL values (a rollout that changes
// it) write rows in turn, and the check flipped at each: an error logged
// at every other row, and authproxy_nats_heartbeat_timeout_short flapping
// so that an alert held for minutes never fired. The longest is the one
// the timeout must allow for. Once every replica writes the shorter one,
// it is taken after this many rows (some 16 intervals).
const intervalRows = 16

// A fleet runs a few coreapi replicas: the relays a heartbeat row lists
// are taken up to maxRelaysListed (those past it count as unlisted), and
// the last beat of at most maxRelaysHeard relay ids, none longer than
// maxRelayID bytes, is kept, so that memory stays bounded whatever is
// published on auth.outbox.relay (coreapi refuses to start with a longer
// OUTBOX_RELAY_ID).
const (
	maxRelaysListed = invalidation.MaxRelaysListed
	maxRelaysHeard  = 1024
	maxRelayID      = invalidation.MaxRelayLen
)

// unlistedRelays stands, among the unheard relays (the warning, the
// authproxy_outbox_relays_unheard count), for all of those a heartbeat row
// could not list.
const unlistedRelays = "(relays not listed)"

// refused reports whether err, a permissions violation, is the refusal of
// a subscription to subject.
func refused(err error, subject string) bool {
	return strings.Contains(strings.ToLower(err.Error()), "subscription to \""+subject+"\"")
}

// kindSubjects are the kinds of invalidation the proxy acts on, each as a
// subscription that covers it: a server whose permissions deny a subject
// under auth.invalidate.> (a deny of auth.invalidate.tenant.>) accepts the
// subscription to auth.invalidate.> and then drops the denied subjects'
// messages without a word, while the heartbeats keep coming. A
// subscription to the kind itself is refused with a permissions
// violation: each connection asks for these and drops them at once
// (probe), and a refusal is one of the invalidations'.
func kindSubjects() []string {
	return []string{
		invalidation.UserSubject("*"),
		invalidation.TenantSubject("*"),
		invalidation.APIKeySubject("*"),
		invalidation.SubjectAll,
	}
}

// refusedKind returns the subject of kindSubjects whose subscription err,
// a permissions violation, refuses ("" if none).
func refusedKind(err error) string {
	for _, subject := range kindSubjects() {
		if refused(err, subject) {
			return subject
		}
	}
	return ""
}

// probe asks the server of nc for a subscription to each kind of
// invalidation, and drops each at once (kindSubjects): a refusal comes
// before the answer to the flush that follows, and the error handler
// takes it for a refusal of the invalidations. On a connection being
// replaced nothing is sent: the next one is probed.
func (s *Subscriber) probe(nc *nats.Conn) {
	for _, subject := range kindSubjects() {
		sub, err := nc.Subscribe(subject, func(*nats.Msg) {})
		if err != nil {
			s.log.Debug("nats probe subscription", "subject", subject, "err", err)
			return
		}
		_ = sub.Unsubscribe()
	}
}

// maxPingsOut is how many pings may be unanswered before the next one
// declares the link dead.
const maxPingsOut = 2

// DeadAfter is the longest a dead link goes unnoticed with pings every
// ping: the client calls it dead at the first ping that finds
// maxPingsOut+1 of its pings unanswered, and the last answer (the last
// moment anything was known to arrive) came at most that many pings
// earlier.
func DeadAfter(ping time.Duration) time.Duration { return ping * (maxPingsOut + 1) }

// PingIntervalFor is the ping interval for caches that trust their entries
// for maxStaleness while the feed is down: a dead link is noticed within
// half of it (one sixth of it per ping, at least 100 ms, at most the
// client's default of two minutes).
func PingIntervalFor(maxStaleness time.Duration) time.Duration {
	return min(max(maxStaleness/(2*(maxPingsOut+1)), 100*time.Millisecond), nats.DefaultPingInterval)
}

// Options configure Connect.
type Options struct {
	URL           string
	ReconnectWait time.Duration // first reconnect wait (doubling, jittered)
	MaxReconnect  time.Duration // cap on the reconnect wait
	Now           func() time.Time
	Rand          func() float64 // uniform in [0, 1) for jitter; nil: math/rand/v2
	PendingLimit  int            // events buffered before dropping; 0: the client's default (512k)
	// KeysChanged is called for each auth.keys.changed event (coreapi's
	// signing keys changed): refetch the key set now. It is also called
	// (on a goroutine of its own) when the feed comes back after an outage
	// or dropped such an event. keys is the digest of the key set the
	// event names (invalidation.Event.Keys), "" when it names none and
	// after an outage or a drop: refetch unless the set held is that one.
	// nil: not subscribed.
	KeysChanged func(keys string)
	// APIKey is called for each auth.invalidate.apikey.<public id> event
	// (a key revoked): forget the key. nil: such events are counted and
	// dropped.
	APIKey func(publicID string)
	// PingInterval is how often the client pings the server to prove the
	// link alive (0: PingIntervalFor(30 s), 5 s). An outage is noticed
	// within DeadAfter(PingInterval) and reported as starting that long
	// before it was noticed.
	PingInterval time.Duration
	// DropCheck is how often the subscriber looks for events its client
	// dropped since the last purge (default 100ms). The client reports a
	// slow consumer only at the first drop of a run; the events it drops
	// after that are caught here. The absence of heartbeats, and of the
	// listed relays' beats, is looked for at the same pace.
	DropCheck time.Duration
	// HeartbeatTimeout is how long a live feed may bring no outbox
	// heartbeat (auth.outbox.heartbeat), or no beat (auth.outbox.relay)
	// from a relay the heartbeat rows list, before the caches trust their
	// entries only for the staleness bound (NATS_HEARTBEAT_TIMEOUT); 0:
	// neither is subscribed to nor waited for.
	HeartbeatTimeout time.Duration
	// KeysChangedGap is the least time between two calls of KeysChanged
	// for auth.keys.changed events (0: 100 ms): an event that comes
	// sooner waits out the rest of it, and the events that queue behind
	// it meanwhile are answered by one call. Whoever may publish on the
	// subject makes each proxy fetch the key set at most this often.
	KeysChangedGap time.Duration
	// checked, when set (tests), runs after each look for dropped events
	// and for silence (watchDrops, every DropCheck).
	checked func()
	// failed, when set (tests), runs after each failed connection attempt
	// the client reports (its reconnect error handler), once it is logged
	// as such.
	failed func(err error)
}

// Connect subscribes and returns at once: the connection is made in the
// background (natsdial), retried until NATS is up, so that no server of
// the URL holds the start. Until the first connection the target is in
// bounded-staleness mode; the first connection purges it and fetches the
// key set again (KeysChanged("")), as a reconnection does, since the
// start's fetch may come before the subscriptions are live.
func Connect(o Options, t Target, log *slog.Logger, m *metrics.Metrics) (*Subscriber, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	if o.MaxReconnect <= 0 {
		o.MaxReconnect = 5 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.DropCheck <= 0 {
		o.DropCheck = 100 * time.Millisecond
	}
	if o.PingInterval <= 0 {
		o.PingInterval = PingIntervalFor(30 * time.Second)
	}
	if o.KeysChangedGap <= 0 {
		o.KeysChangedGap = 100 * time.Millisecond
	}
	s := &Subscriber{t: t, key: o.APIKey, keys: o.KeysChanged, log: log, m: m, now: o.Now, done: make(chan struct{}),
		dead: DeadAfter(o.PingInterval), hbTimeout: max(o.HeartbeatTimeout, 0),
		heard: map[string]time.Time{}, listed: map[string]time.Time{}, warned: map[string]bool{}, origin: o.Now(),
		checked: o.checked, subscribedC: make(chan struct{}), keysGap: o.KeysChangedGap,
		eventLogs: logging.Budget{PerSecond: eventLogsPerSecond, Report: logging.CountLine(log, "nats event lines not logged", eventLogsPerSecond)}}
	// Whatever happens below, the first connection's handler stops
	// waiting once Connect returns.
	defer close(s.subscribedC)
	t.Disconnected(o.Now())
	// The first connection is made in the background, at once
	// (natsdial): the client's own pass over the servers before Connect
	// returned held the start 2 s for each server that accepts and never
	// answers.
	dial := natsdial.New(0)
	// A refusal of the credentials, reported by the client at every
	// attempt (up to one each MaxReconnect), and a server the attempts
	// cannot reach are logged once, then at most once a minute, until a
	// connection is made (natsconn).
	events := natsconn.New(log, o.URL, "set the password of the proxy's NATS user in NATS_URL as the server has it (authproxy_nats_connected is 0 meanwhile)", o.Now)
	nc, err := nats.Connect(o.URL,
		nats.Name("tollgate-authproxy"),
		nats.SetCustomDialer(dial),
		nats.MaxReconnects(-1),
		// Forever, through refused credentials too: the client's default
		// gives up for good at the second same authorization error from a
		// server (one restarting before its account resolver or auth
		// callout is ready, a configuration rolled back), and the caches
		// would stay in bounded staleness until the proxy restarts.
		nats.IgnoreAuthErrorAbort(),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.CustomReconnectDelay(dial.Delay(func(attempts int) time.Duration {
			return reconnectDelay(attempts, o.ReconnectWait, o.MaxReconnect, o.Rand())
		})),
		nats.ConnectHandler(func(nc *nats.Conn) {
			events.Connected("nats connected")
			// The first connection is made in the background, perhaps
			// before Connect has made the subscriptions: they are asked
			// for once made. It is reported here, on the client's
			// callback goroutine, as a reconnection is (keys may have
			// changed meanwhile): the server's refusals of the
			// subscriptions are handed on behind this handler (confirm).
			<-s.subscribedC
			gen := nc.Stats().Reconnects
			if s.subscribed(nc) {
				s.confirm(nc, gen)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.disconnected()
			events.Disconnected(err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			events.Connected("nats reconnected; purging caches and refetching keys")
			// The subscriptions are asked for anew. The client queues this
			// handler before it reads the server's answer to them, so a
			// refusal on this connection is reported after it.
			s.denied.Store(false)
			s.relayDenied.Store(false)
			gen := nc.Stats().Reconnects
			if s.subscribed(nc) {
				s.confirm(nc, gen)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			events.ReconnectFailed(err)
			if o.failed != nil {
				o.failed(err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { m.NATSConnected.Set(0) }),
		nats.ErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
			// Once this error is taken in, a connection awaiting it may
			// be reported live.
			defer s.answered(c, err)
			if errors.Is(err, nats.ErrSlowConsumer) {
				switch {
				case sub == nil:
				case sub == s.inv.Load():
					s.purgeForDrops(sub)
					return
				case sub == s.ks.Load():
					s.refetchForDrops(sub)
					return
				case sub == s.hb.Load(), sub == s.rl.Load():
					return // a heartbeat or a relay's beat dropped names nothing to evict
				}
				// Events were dropped: which entries they named is unknown.
				log.Warn("nats slow consumer: invalidations dropped; purging caches")
				t.InvalidateAll()
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) && refused(err, invalidation.SubjectWildcard) {
				// The server will deliver no invalidation on this
				// connection: the feed is down, however connected.
				log.Error("nats refuses the subscription to invalidations; caches are trusted only for the staleness bound", "err", err)
				s.denied.Store(true)
				s.disconnected()
				return
			}
			if kind := refusedKind(err); kind != "" && errors.Is(err, nats.ErrPermissionViolation) {
				// The subscription to auth.invalidate.> was accepted, but
				// the server drops this kind's events: the feed is down
				// for it, and which entries they name is unknown. One
				// error per connection: the other kinds' probes, or the
				// invalidations' own subscription, may be refused too.
				if s.denied.Swap(true) {
					return
				}
				log.Error("nats denies this proxy a kind of invalidation under "+invalidation.SubjectWildcard+
					" (a deny under it drops those events without a word); caches are trusted only for the staleness bound: allow the whole "+
					invalidation.SubjectWildcard+" with no deny under it", "subject", kind, "err", err)
				s.disconnected()
				return
			}
			if errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
				// The server refused one of the subscriptions for its
				// max_subscriptions limit, without naming it, and the
				// client sends those of a new connection in no set
				// order: the one refused may be the invalidations'. One
				// error per connection (the probes may be refused too).
				if s.denied.Swap(true) {
					return
				}
				log.Error("nats refuses a subscription: maximum subscriptions exceeded; caches are trusted only for the staleness bound: raise the NATS user's or server's max_subscriptions (the proxy takes up to 5: 4, and one at a time at each connection to check the kinds of invalidation)", "err", err)
				s.disconnected()
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) && refused(err, invalidation.SubjectHeartbeat) {
				// Invalidations still arrive, but the feed is called stale
				// after HeartbeatTimeout, for good.
				log.Error("nats refuses the subscription to "+invalidation.SubjectHeartbeat+
					"; caches are trusted only for the staleness bound: allow it, or set NATS_HEARTBEAT_TIMEOUT=0", "err", err)
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) && refused(err, invalidation.SubjectKeysChanged) {
				// Invalidations still arrive, so the feed stays live; but
				// no announced key change does: a signing key removed from
				// coreapi (a leaked one) keeps verifying tokens here until
				// the next regular refresh of the key set, as while NATS is
				// down. Said as loudly as the other refusals, not as one of
				// the client's passing warnings.
				log.Error("nats refuses the subscription to "+invalidation.SubjectKeysChanged+
					"; a signing key removed from coreapi keeps verifying tokens on this proxy until the next JWKS refresh (JWKS_REFRESH_INTERVAL): allow it", "err", err)
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) && refused(err, invalidation.SubjectRelay) {
				// A deployment that has not granted the subject must not
				// find every proxy stale: the relays' beats are not
				// watched on this connection, the heartbeat still is.
				log.Error("nats refuses the subscription to "+invalidation.SubjectRelay+
					"; relay beats are not watched, so a relay whose publications do not reach this proxy goes unnoticed: allow it", "err", err)
				s.relaysNotWatched()
				return
			}
			events.Error(err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	sub, err := nc.Subscribe(invalidation.SubjectWildcard, s.handle)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe %s: %w", invalidation.SubjectWildcard, err)
	}
	s.inv.Store(sub)
	if o.PendingLimit > 0 {
		if err := sub.SetPendingLimits(o.PendingLimit, -1); err != nil {
			nc.Close()
			return nil, fmt.Errorf("pending limits: %w", err)
		}
	}
	var ks *nats.Subscription
	if o.KeysChanged != nil {
		if ks, err = nc.Subscribe(invalidation.SubjectKeysChanged, s.keysChanged); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", invalidation.SubjectKeysChanged, err)
		}
		s.ks.Store(ks)
	}
	if s.hbTimeout > 0 {
		hb, err := nc.Subscribe(invalidation.SubjectHeartbeat, s.heartbeat)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", invalidation.SubjectHeartbeat, err)
		}
		s.hb.Store(hb)
		rl, err := nc.Subscribe(invalidation.SubjectRelay, s.relayBeat)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", invalidation.SubjectRelay, err)
		}
		s.rl.Store(rl)
	}
	s.nc = nc
	s.watcher.Add(2)
	go s.watchDrops(sub, ks, o.DropCheck)
	// The client reports no refusal of the credentials before the first
	// connection: they are read from it meanwhile. Nor a failed
	// handshake, ever.
	go func() { defer s.watcher.Done(); events.Watch(nc, o.DropCheck, s.done) }()
	// The first connection, made in the background before or after this
	// point, is reported by the client's connect handler once the server
	// has confirmed the subscriptions (subscribedC is closed on return).
	return s, nil
}

// confirm reports the feed live on nc, whose subscriptions the server has
// just confirmed (subscribed), unless the server refused one that matters.
// Its refusals come as errors the client hands on to its error handler
// after the connection's handler, from which confirm runs: a report made
// here at once read the feed live until the refusal was taken in, its
// purge spent and entries fetched meanwhile trusted as if invalidations
// flowed. Every error the server sent before confirming was read by then,
// the last of them is the client's last error: with none the feed is
// live now; else the report waits until the error handler has taken that
// one in (answered), and with it every refusal before it. gen is the
// client's count of reconnections when the flush began: if the connection
// was replaced since, the flush confirmed the one before, and the new
// one's handler confirms it. Called on the client's callback goroutine.
func (s *Subscriber) confirm(nc *nats.Conn, gen uint64) {
	last := nc.LastError()
	if nc.Stats().Reconnects != gen {
		return
	}
	s.linkMu.Lock()
	s.awaited = last
	s.linkMu.Unlock()
	if last == nil {
		s.connected(nc)
	}
}

// answered notes that the error handler has taken err in: if it is the
// one a new connection awaits (confirm), the connection is reported live
// unless an error before it, or err itself, denied it (connected).
func (s *Subscriber) answered(nc *nats.Conn, err error) {
	s.linkMu.Lock()
	due := s.awaited != nil && errors.Is(err, s.awaited)
	if due {
		s.awaited = nil
	}
	s.linkMu.Unlock()
	if due {
		s.connected(nc)
	}
}

// connected reports the feed live, once per outage: the caches purge
// (events may have been missed) and the key set is fetched again, since
// an auth.keys.changed may have been missed too (at the first connection:
// the start's fetch may have come before the subscriptions were live).
//
// A connection already lost again is not reported: its disconnection may
// have been reported before (the client reads as disconnected first, then
// runs its handler), and the caches must stay in bounded staleness until
// the reconnection's own report.
func (s *Subscriber) connected(nc *nats.Conn) {
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	if !nc.IsConnected() || s.denied.Load() {
		return
	}
	s.m.NATSConnected.Set(1)
	if s.live.CompareAndSwap(false, true) {
		// A heartbeat, and each listed relay's beat, is waited for
		// afresh: the caches are purged.
		now := s.now()
		s.hbAt.Store(int64(now.Sub(s.origin)))
		s.liveAt = now
		s.purge()
		// Connected only once the caches are told, as Connected says: the
		// purge of a large cache takes milliseconds, and a caller that
		// went on at Connected found them still in bounded staleness.
		s.reported.Store(true)
		s.endStale() // after the caches are live: the gauge's 0 says they are
	}
}

// purge tells the caches the feed is live again (they purge: events may
// have been missed) and refetches the key set (an auth.keys.changed may
// have been missed too). linkMu is held.
func (s *Subscriber) purge() {
	s.t.Reconnected()
	if s.keys != nil {
		go s.keys("") // a fetch over the network: not on the client's callback goroutine
	}
}

// endStale ends the feed's staleness for want of a heartbeat or of a
// relay's beat, if it was stale. linkMu is held.
func (s *Subscriber) endStale() {
	if s.stale {
		s.stale = false
		s.m.FeedStale.Set(0)
	}
	s.m.RelaysUnheard.Set(0)
	s.warnedSilent = false
	clear(s.warned)
}

// subscribed waits until the server has the subscriptions of a new
// connection: the client sends them again before it runs its handlers,
// but does not wait for the server to act on them, and an event published
// before it has would be lost, after the caches were purged and refilled
// as if the feed were live. The server is asked first for the probes of
// the kinds of invalidation (probe), whose refusal it answers before the
// flush. It reports false if the connection ends or
// the subscriber closes first. Each wait is twice the last (from 2 s, at
// most 30 s): on a path slower than a wait, every flush would time out.
func (s *Subscriber) subscribed(nc *nats.Conn) bool {
	s.probe(nc)
	for wait := 2 * time.Second; ; wait = min(2*wait, 30*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		go func() { // Close does not wait out a flush
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := nc.FlushWithContext(ctx)
		cancel()
		if err == nil {
			return true
		}
		select {
		case <-s.done:
			return false
		default:
		}
		if !nc.IsConnected() {
			return false
		}
		s.log.Warn("nats flush", "err", err)
	}
}

// disconnected puts the caches in bounded staleness, the outage's start
// first: the client already reads as disconnected, and the staleness bound
// counts from the last moment the feed was known to deliver, up to
// DeadAfter(PingInterval) before now (a link that died silently is noticed
// only by its unanswered pings).
//
// A feed stale for want of heartbeats (or of a relay's beats) stays in the
// bounded staleness it was put in (counted from the last one), but is no
// longer reported as stale: authproxy_invalidation_feed_stale says that the
// relays are silent although NATS is up.
func (s *Subscriber) disconnected() {
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	s.t.Disconnected(s.now().Add(-s.dead))
	s.m.NATSConnected.Set(0)
	s.live.Store(false)
	s.reported.Store(false)
	s.awaited = nil // a connection denied or lost is not reported
	s.endStale()
}

func (s *Subscriber) handle(msg *nats.Msg) {
	var ev invalidation.Event
	if len(msg.Data) > 0 {
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			// The subject alone says what to drop; the body is informational.
			s.warnEvent("invalidation body", "subject", msg.Subject, "err", err)
		}
	}
	kind := Evict(s.t, s.key, msg.Subject)
	if kind == "" {
		// Something changed that this proxy cannot name (the design's
		// auth.invalidate.session.<id>, a subject written by hand, a kind
		// a newer coreapi publishes): everything goes, as the relay
		// publishes a row it cannot deliver as auth.invalidate.all.
		// Dropped, what it announced was trusted for the entries' TTL.
		s.warnEvent("invalidation subject not understood; purging caches", "subject", msg.Subject)
		s.t.InvalidateAll()
		s.m.Invalidations.WithLabelValues("unknown").Inc()
		return
	}
	s.m.Invalidations.WithLabelValues(kind).Inc()
	if ev.At > 0 {
		lag := s.now().Sub(time.UnixMilli(ev.At))
		s.m.InvalidationLag.Observe(max(lag, 0).Seconds())
	}
}

// purgeForDrops purges the caches if sub dropped events since the last
// purge: which entries they named is unknown. The client reports a slow
// consumer once, at the first drop, and drops silently from then on until
// an event fits in its queue again; an entry filled after that first purge
// may be named by one of the later drops, so each of them is followed by
// a purge too (watchDrops), at most one per DropCheck.
func (s *Subscriber) purgeForDrops(sub *nats.Subscription) {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	n, err := sub.Dropped()
	if err != nil || n == s.purgedAt {
		return
	}
	s.log.Warn("nats slow consumer: invalidations dropped; purging caches", "dropped_total", n, "dropped", n-s.purgedAt)
	s.purgedAt = n
	s.t.InvalidateAll()
}

// refetchForDrops refetches the key set if ks, the auth.keys.changed
// subscription, dropped events since the last refetch for them.
func (s *Subscriber) refetchForDrops(ks *nats.Subscription) {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	n, err := ks.Dropped()
	if err != nil || n == s.refetchedAt {
		return
	}
	s.log.Warn("nats slow consumer: key changes dropped; refetching keys", "dropped_total", n)
	s.refetchedAt = n
	go s.keys("")
}

// watchDrops acts on dropped events every DropCheck until Close: a purge
// for sub's, a key set refetch for ks's (ks may be nil).
func (s *Subscriber) watchDrops(sub, ks *nats.Subscription, every time.Duration) {
	defer s.watcher.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.purgeForDrops(sub)
			if ks != nil {
				s.refetchForDrops(ks)
			}
			s.watchHeartbeat()
			if s.checked != nil {
				s.checked()
			}
		}
	}
}

// heartbeat notes the arrival of an outbox heartbeat and, from a row,
// the relays it lists; it ends the staleness of a live feed that nothing
// keeps stale any more (recover).
func (s *Subscriber) heartbeat(msg *nats.Msg) {
	now := s.now()
	s.hbAt.Store(int64(now.Sub(s.origin)))
	// Counted once taken in (after linkMu is released): a reader of the
	// counter then finds the heartbeat's effects.
	defer s.m.Invalidations.WithLabelValues("heartbeat").Inc()
	// A row (published from the outbox, with its Nats-Msg-Id) lists the
	// relays registered as publishing when it was written, and replaces
	// the list; a heartbeat a relay publishes straight to NATS while the
	// database is unreachable lists none, and leaves it.
	row := msg.Header.Get(nats.MsgIdHdr) != ""
	var ev invalidation.Event
	if row {
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			// The list is unknown: the one before still stands.
			s.warnEvent("outbox heartbeat body", "err", err)
			row = false
		}
	}
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	s.warnedSilent = false
	if row {
		s.list(ev.Relays, ev.RelaysUnlisted, now)
		s.checkInterval(time.Duration(ev.IntervalMS) * time.Millisecond)
	}
	s.recover(now, "outbox heartbeat received")
}

// checkInterval compares the heartbeat timeout with the interval a row
// announced (0: a coreapi older than the field, nothing to compare), the
// longest of the last intervalRows rows': a timeout shorter than
// invalidation.MinHeartbeatTimeout of it makes the feed stale, and purges
// the caches when that ends, at every relay that stops without
// deregistering and at late heartbeats, which the two services' settings
// alone do not show. It says so in an error when that interval changes,
// and in authproxy_nats_heartbeat_timeout_short. Called under linkMu.
func (s *Subscriber) checkInterval(announced time.Duration) {
	if announced <= 0 {
		return
	}
	s.intervals[s.next] = announced
	s.next = (s.next + 1) % intervalRows
	interval := slices.Max(s.intervals[:])
	if interval == s.interval {
		return
	}
	s.interval = interval
	least := invalidation.MinHeartbeatTimeout(interval)
	if s.hbTimeout >= least {
		s.m.HeartbeatTimeoutShort.Set(0)
		return
	}
	s.m.HeartbeatTimeoutShort.Set(1)
	s.logEvent(slog.LevelError, "NATS_HEARTBEAT_TIMEOUT is too short for coreapi's OUTBOX_HEARTBEAT_INTERVAL: a coreapi replica that stops without deregistering, or a late heartbeat, will make this proxy distrust its caches and purge them; raise it to at least the value given, or shorten the interval",
		"timeout", s.hbTimeout.String(), "interval", interval.String(), "at_least", least.String())
}

// relayBeat notes the arrival of a relay's own beat (auth.outbox.relay),
// and ends the staleness of a live feed that nothing keeps stale any more
// (recover). A beat that names no relay is ignored.
func (s *Subscriber) relayBeat(msg *nats.Msg) {
	var ev invalidation.Event
	if json.Unmarshal(msg.Data, &ev) != nil || ev.Relay == "" || len(ev.Relay) > maxRelayID {
		return
	}
	// Counted once taken in, as a heartbeat is: a reader of the counter
	// then finds the beat's effects.
	defer s.m.Invalidations.WithLabelValues("relay").Inc()
	now := s.now()
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	s.hear(ev.Relay, now)
	s.recover(now, "outbox relay heard", "relay", ev.Relay)
}

// hear records a beat of relay at now. Once maxRelaysHeard ids are kept, a
// new one first drops those neither listed nor heard within
// HeartbeatTimeout; if none goes, a listed relay takes the place of the
// unlisted one heard longest ago, and an unlisted one is not recorded
// (its beats count only once a row lists it). linkMu is held.
func (s *Subscriber) hear(relay string, now time.Time) {
	delete(s.warned, relay)
	if _, ok := s.heard[relay]; !ok && len(s.heard) >= maxRelaysHeard {
		oldest := ""
		for id, at := range s.heard {
			if _, ok := s.listed[id]; ok {
				continue
			}
			if now.Sub(at) > s.hbTimeout {
				delete(s.heard, id)
			} else if oldest == "" || at.Before(s.heard[oldest]) {
				oldest = id
			}
		}
		if len(s.heard) >= maxRelaysHeard {
			if _, ok := s.listed[relay]; !ok || oldest == "" {
				return
			}
			delete(s.heard, oldest)
		}
	}
	s.heard[relay] = now
}

// list replaces the relays expected to beat with those a heartbeat row
// lists (the first maxRelaysListed): a relay listed before keeps when it
// was first listed, a new one is listed from now, the start of its grace.
// An id too long for its beat to be recorded is left out. unlisted is how
// many more relays the row counted than it lists; with the names past
// maxRelaysListed, they are relays whose beats cannot be expected, given
// the same grace from when the row first said so. linkMu is held.
func (s *Subscriber) list(relays []string, unlisted int, now time.Time) {
	next := make(map[string]time.Time, min(len(relays), maxRelaysListed))
	for _, id := range relays {
		if id == "" || len(id) > maxRelayID {
			continue
		}
		if _, ok := next[id]; ok {
			continue
		}
		// The bound holds for a relay listed before too: the row's first
		// maxRelaysListed are listed, in its order.
		if len(next) == maxRelaysListed {
			unlisted++
			continue
		}
		at, ok := s.listed[id]
		if !ok {
			at = now
		}
		next[id] = at
	}
	unlisted = max(unlisted, 0)
	switch {
	case unlisted > 0 && s.unlisted == 0:
		s.unlistedAt = now
		s.logEvent(slog.LevelError, "coreapi runs more outbox relays than a heartbeat lists: this proxy cannot expect every relay's beat, and calls its invalidation feed stale while this lasts (caches trusted only for the staleness bound); run fewer coreapi replicas against one database",
			"listed", maxRelaysListed, "unlisted", unlisted, "timeout", s.hbTimeout)
	case unlisted == 0 && s.unlisted > 0:
		s.logEvent(slog.LevelInfo, "every outbox relay is listed in the heartbeat again")
	}
	s.unlisted = unlisted
	for id := range s.warned {
		if _, ok := next[id]; !ok && (id != unlistedRelays || unlisted == 0) {
			delete(s.warned, id)
		}
	}
	s.listed = next
}

// unheard returns the listed relays not heard for HeartbeatTimeout (sorted),
// and since, the earliest moment one of them was last known to deliver:
// its last beat or, never heard, the start of its grace. The timeout
// counts from the latest of its last beat, its listing and the feed's
// going live: a relay just listed, or a connection just made, is given
// that long to be heard. None while relay beats are not watched. linkMu
// is held.
func (s *Subscriber) unheard(now time.Time) (ids []string, since time.Time) {
	if s.relayDenied.Load() {
		return nil, time.Time{}
	}
	for id, listedAt := range s.listed {
		grace := latest(listedAt, s.liveAt)
		beat, heard := s.heard[id]
		if now.Sub(latest(beat, grace)) <= s.hbTimeout {
			continue
		}
		good := grace
		if heard {
			good = beat
		}
		if ids == nil || good.Before(since) {
			since = good
		}
		ids = append(ids, id)
	}
	if s.unlisted > 0 {
		if grace := latest(s.unlistedAt, s.liveAt); now.Sub(grace) > s.hbTimeout {
			if ids == nil || grace.Before(since) {
				since = grace
			}
			ids = append(ids, unlistedRelays)
		}
	}
	slices.Sort(ids)
	return ids, since
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// relaysNotWatched stops waiting for the relays' beats: the server refused
// their subscription. A feed stale only for a relay's silence is trusted
// again (recover).
func (s *Subscriber) relaysNotWatched() {
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	s.relayDenied.Store(true)
	s.m.RelaysUnheard.Set(0)
	clear(s.warned)
	s.recover(s.now(), "relay beats not watched")
}

// recover ends the staleness of a live feed once nothing keeps it stale (a
// heartbeat within HeartbeatTimeout, every listed relay heard within it),
// as a reconnection does: the caches are purged and the key set is
// refetched, since the events before may not all have been applied (see
// the package comment), least of all those of a relay that went unheard.
// why and args say what ended it, in the log. linkMu is held.
func (s *Subscriber) recover(now time.Time, why string, args ...any) {
	if !s.stale || !s.live.Load() || int64(now.Sub(s.origin))-s.hbAt.Load() > int64(s.hbTimeout) {
		return
	}
	if ids, _ := s.unheard(now); len(ids) > 0 {
		s.m.RelaysUnheard.Set(float64(len(ids)))
		return
	}
	s.purge()
	s.endStale() // after the caches are live: the gauge's 0 says they are
	s.log.Info(why+"; the invalidation feed is live again: purging caches and refetching keys", args...)
}

// watchHeartbeat calls a live feed stale when no heartbeat arrived for
// HeartbeatTimeout, or a listed relay was not heard for it (unheard): the
// caches trust their entries for the staleness bound, counted from the
// last heartbeat, or that relay's last beat (when the feed was last known
// to deliver what coreapi committed, or what that relay published),
// whichever is earlier. Each reason is named in a warning once, as it
// arises.
func (s *Subscriber) watchHeartbeat() {
	if s.hbTimeout == 0 {
		return
	}
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	if !s.live.Load() {
		return
	}
	now := s.now()
	// A heartbeat stores hbAt before it takes linkMu: one that came after
	// this load finds the feed stale and recovers it.
	at := s.origin.Add(time.Duration(s.hbAt.Load()))
	silent := now.Sub(at) > s.hbTimeout
	ids, since := s.unheard(now)
	s.m.RelaysUnheard.Set(float64(len(ids)))
	if !s.stale {
		if !silent && len(ids) == 0 {
			return
		}
		from := since
		if silent && (len(ids) == 0 || at.Before(since)) {
			from = at
		}
		s.stale = true
		s.m.FeedStale.Set(1)
		s.t.Disconnected(from)
	}
	if silent && !s.warnedSilent {
		s.warnedSilent = true
		s.log.Warn("no outbox heartbeat although NATS is connected: coreapi's relays may not be publishing; caches are trusted only for the staleness bound",
			"since", at, "timeout", s.hbTimeout)
	}
	var named []string
	for _, id := range ids {
		if !s.warned[id] {
			s.warned[id] = true
			named = append(named, id)
		}
	}
	if len(named) > 0 {
		s.log.Warn("outbox relays unheard although NATS is connected: what they publish may not reach this proxy (their NATS node cut off from its own); caches are trusted only for the staleness bound",
			"relays", named, "since", since, "timeout", s.hbTimeout)
	}
}

// Dropped is the number of invalidations this client discarded because it
// fell behind (a slow consumer); each one means a purge is due.
func (s *Subscriber) Dropped() int {
	n, _ := s.inv.Load().Dropped()
	return n
}

// keysChanged answers an auth.keys.changed event with a refetch of the key
// set (KeysChanged), unless more such events are queued behind it: the
// last of them is answered by a refetch that starts after every one of
// them arrived, which answers them all. It is called with the digest they
// all named, or "" when they differ. Refetches for events are at least
// keysGap apart: an event that comes sooner waits (and is folded into the
// events that queue meanwhile). Otherwise every event was a fetch of its
// own, one after the other: a burst of 500, whoever published it, made
// each proxy fetch the key set 500 times.
func (s *Subscriber) keysChanged(msg *nats.Msg) {
	s.m.Invalidations.WithLabelValues("keys").Inc()
	var ev invalidation.Event
	if json.Unmarshal(msg.Data, &ev) != nil {
		ev = invalidation.Event{} // unreadable: names no key set, refetch
	}
	if ev.At > 0 {
		s.m.InvalidationLag.Observe(max(s.now().Sub(time.UnixMilli(ev.At)), 0).Seconds())
	}
	digest := ev.Keys
	if s.folded && s.foldedKeys != digest {
		digest = ""
	}
	if wait := s.keysGap - s.now().Sub(s.keysAt); wait > 0 {
		t := time.NewTimer(min(wait, s.keysGap))
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
		}
	}
	if s.queuedKeys() {
		s.folded, s.foldedKeys = true, digest
		return
	}
	s.folded = false
	s.keysAt = s.now()
	s.keys(digest)
}

// queuedKeys reports whether more auth.keys.changed events are queued
// behind the one being handled. The client counts the event being handled
// as pending until its handler returns.
func (s *Subscriber) queuedKeys() bool {
	ks := s.ks.Load()
	if ks == nil {
		return false
	}
	n, _, err := ks.Pending()
	return err == nil && n > 1
}

// Connected reports whether the connection is up and the caches have been
// told the feed is live (the purge of a (re)connection is behind it: what
// is cached from now on stays until an event or its TTL).
func (s *Subscriber) Connected() bool { return s.reported.Load() && s.nc.IsConnected() }

// Close drains the subscription and waits (up to timeout) for the
// connection to close.
func (s *Subscriber) Close(timeout time.Duration) error {
	// No purge may run once Close returns (the caches are closed next).
	s.stop.Do(func() { close(s.done) })
	s.watcher.Wait()
	// Once no handler runs: the count of lines left out, which no later
	// one will take.
	defer s.eventLogs.Close()
	closed := make(chan struct{})
	s.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := s.nc.Drain(); err != nil {
		s.nc.Close()
		return fmt.Errorf("drain nats: %w", err)
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		s.nc.Close()
	}
	return nil
}

// eventLogsPerSecond bounds the lines written for what events carry (see
// logEvent).
const eventLogsPerSecond = 10

// warnEvent is logEvent at slog.LevelWarn.
func (s *Subscriber) warnEvent(msg string, args ...any) { s.logEvent(slog.LevelWarn, msg, args...) }

// logEvent writes a line about what an event carries (a body that is not
// JSON, a subject not understood, what a heartbeat row announces), at
// most eventLogsPerSecond a second together; the others are counted in a
// line of their own ("nats event lines not logged"). Every such event was
// a line, or two: whoever may publish under the subjects (a heartbeat row
// is anything with a Nats-Msg-Id) wrote as many lines as events.
func (s *Subscriber) logEvent(level slog.Level, msg string, args ...any) {
	if s.eventLogs.Allow(s.now(), level) {
		s.log.Log(context.Background(), level, msg, args...)
	}
}
