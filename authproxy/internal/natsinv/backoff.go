package natsinv

import "time"

// reconnectDelay is the wait before the attempts-th pass over the servers:
// exponential from base, capped at limit, drawn from [d/2, d) with f (a
// uniform draw in [0, 1)). After a NATS restart a fleet of proxies comes
// back spread over the window instead of all at once, and a long outage
// costs one attempt per proxy every few seconds, not four a second.
func reconnectDelay(attempts int, base, limit time.Duration, f float64) time.Duration {
	d := base
	for i := 1; i < attempts && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + time.Duration(float64(d/2)*f)
}
