// Package natsdial holds the dialer of the services' NATS connections,
// which leaves their first connection to the client's reconnect loop, in
// the background.
//
// With RetryOnFailedConnect, nats.Connect still tries every server of the
// URL in turn before it returns, and a server that accepts the connection
// and never answers (a partition, a blackholed address, a stale failover)
// holds it for the client's timeout, 2 s, each: a NATS_URL of three such
// servers kept a service from listening for 6 s. Neither service needs
// NATS to serve (the proxy's caches start in bounded staleness until the
// feed is live, coreapi's outbox relay publishes once connected), so the
// dials of nats.Connect's own pass are refused: it returns at once, and
// its reconnect loop, started at once too (Delay), makes the first
// connection, a silent server costing its timeout there.
package natsdial

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotYet is the answer to the dials of nats.Connect's own pass.
var ErrNotYet = errors.New("natsdial: the first connection is made in the background")

// Dialer is a nats.CustomDialer (nats.SetCustomDialer) that refuses the
// first dial of each address, nats.Connect's pass over the servers, and
// dials every later one as the client's own dialer does. The client
// holds its lock through that pass, and its reconnect loop waits for it:
// the loop's dials all come after, and are made.
type Dialer struct {
	d     net.Dialer
	mu    sync.Mutex
	tried map[string]bool // addresses whose first dial was refused: the URL's servers (resolved), and those the cluster announces
	slept atomic.Bool
}

// New returns a Dialer whose dials give up after timeout (0: the client's
// default, 2 s).
func New(timeout time.Duration) *Dialer {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Dialer{d: net.Dialer{Timeout: timeout}, tried: map[string]bool{}}
}

// Dial refuses the first dial of address (ErrNotYet) and dials the others.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	d.mu.Lock()
	first := !d.tried[address]
	d.tried[address] = true
	d.mu.Unlock()
	if first {
		return nil, ErrNotYet
	}
	return d.d.Dial(network, address)
}

// Delay wraps the reconnect loop's wait before a pass over the servers
// (nats.CustomReconnectDelay) so that the first, which follows the pass
// Dial refused, is none: the first connection is made at once.
func (d *Dialer) Delay(wait func(attempts int) time.Duration) func(attempts int) time.Duration {
	return func(attempts int) time.Duration {
		if d.slept.CompareAndSwap(false, true) {
			return 0
		}
		return wait(attempts)
	}
}
