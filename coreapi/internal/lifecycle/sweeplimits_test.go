package lifecycle_test

import (
	"context"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
)

// TestSweepKeepsTheWindowBefore: the sweep keeps a rate limit's counter
// through the window after its own, whose sliding count it weighs in, for
// the longest window (a day: personal API keys, client secrets); swept a
// day after its window started, the day's 100 keys were forgotten as soon
// as it ended, and 100 more passed at once.
func TestSweepKeepsTheWindowBefore(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	ctx := context.Background()
	lim := apikeys.PersonalCreations
	day, stale := ratelimit.Key("api_key_personal_create", "t", "u"), ratelimit.Key("api_key_personal_create", "t", "v")
	x.exec(t, `INSERT INTO rate_limits (key, window_start, hits) VALUES
    ($1, now() - interval '25 hours', $3), ($2, now() - interval '49 hours', $3)`, day, stale, lim.N)
	if _, err := x.lc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM rate_limits WHERE key = $1`, day).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 1 {
		t.Fatalf("the counter of the day that ended an hour ago was swept")
	}
	if err := x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM rate_limits WHERE key = $1`, stale).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("the counter of two days ago was kept")
	}
	// An hour into the next day 23/24 of the 100 still count, 95.8: 5
	// more are allowed.
	l := ratelimit.New(x.DB.Pool)
	allowed := 0
	for range lim.N {
		ok, _, err := l.Allow(ctx, day, lim)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d keys allowed an hour after a day of %d, want 5", allowed, lim.N)
	}
}
