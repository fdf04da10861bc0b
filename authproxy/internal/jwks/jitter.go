package jwks

import "time"

// refreshJitter spreads background refreshes over ±10 % of the interval,
// so a fleet of proxies started together (a rollout, a node drain) does not
// keep hitting coreapi in the same instant every interval.
const refreshJitter = 0.1

// spread scales d by a factor in [1-refreshJitter, 1+refreshJitter); f is a
// uniform draw in [0, 1).
func spread(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - refreshJitter + 2*refreshJitter*f))
}

// halfJitter draws a retry wait in [d/2, d): retries of many proxies that
// failed together (coreapi restarting) come back spread out, never later
// than the plain backoff would.
func halfJitter(d time.Duration, f float64) time.Duration {
	return d/2 + time.Duration(float64(d/2)*f)
}
