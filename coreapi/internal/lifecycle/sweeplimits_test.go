package lifecycle_test

import (
	"context"
	"testing"
	"time"

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
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := context.Background()
	lim := apikeys.DefaultLimits().PersonalCreations
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

// TestSweepKeepsEachCounterTwoOfItsWindows: the sweep deletes a rate
// limit's counter once two of its own windows have passed since its
// window started (the sliding count weighs in the window before, nothing
// after that), whichever statement counted it, and a counter written
// before its window was recorded as a day's. Kept 48 hours whatever its
// window, a minute's counter (OAuth sign-ins started per client IP)
// stayed 2,880 times as long as it counted, and a week's was forgotten
// while its hits still counted.
func TestSweepKeepsEachCounterTwoOfItsWindows(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := context.Background()
	l := ratelimit.New(x.DB.Pool)
	minute := ratelimit.Limit{N: 20, Window: time.Minute}
	day := ratelimit.Limit{N: 100, Window: 24 * time.Hour}
	week := ratelimit.Limit{N: 100, Window: 7 * 24 * time.Hour}
	quarter := ratelimit.Limit{N: 100, Window: 15 * time.Minute}
	allow := func(name string, lim ratelimit.Limit) []byte {
		t.Helper()
		k := ratelimit.Key("sweep", name)
		if ok, _, err := l.Allow(ctx, k, lim); err != nil || !ok {
			t.Fatalf("Allow %s = %v, %v", name, ok, err)
		}
		return k
	}
	// previous is a counter as the version before window_s wrote it.
	previous := func(name string) []byte {
		t.Helper()
		k := ratelimit.Key("sweep", name)
		x.exec(t, `INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, now(), 1)`, k)
		return k
	}
	outer, inner := ratelimit.Key("sweep", "outer"), ratelimit.Key("sweep", "inner")
	if _, ok, _, err := l.AllowBoth(ctx, outer, quarter, inner, minute); err != nil || !ok {
		t.Fatalf("AllowBoth = %v, %v", ok, err)
	}
	outerBefore, innerBefore := previous("outer before"), previous("inner before")
	if _, ok, _, err := l.AllowBoth(ctx, outerBefore, quarter, innerBefore, minute); err != nil || !ok {
		t.Fatalf("AllowBoth on counters of the previous version = %v, %v", ok, err)
	}
	recounted := previous("before counted")
	if ok, _, err := l.Allow(ctx, recounted, minute); err != nil || !ok {
		t.Fatalf("Allow on a counter of the previous version = %v, %v", ok, err)
	}
	counters := []struct {
		name string
		key  []byte
		ago  time.Duration
		kept bool
	}{
		{"a minute's counter within its second minute", allow("minute kept", minute), 2*time.Minute - 10*time.Second, true},
		{"a minute's counter after two minutes", allow("minute swept", minute), 2*time.Minute + time.Second, false},
		{"a day's counter at 47 hours", allow("day kept", day), 47 * time.Hour, true},
		{"a day's counter after 48 hours", allow("day swept", day), 48*time.Hour + time.Second, false},
		{"a week's counter at 13 days", allow("week kept", week), 13 * 24 * time.Hour, true},
		{"a week's counter after 14 days", allow("week swept", week), 14*24*time.Hour + time.Second, false},
		{"a counter of the previous version at 47 hours", previous("before kept"), 47 * time.Hour, true},
		{"a counter of the previous version after 48 hours", previous("before swept"), 48*time.Hour + time.Second, false},
		{"a counter of the previous version counted since in minutes", recounted, 2*time.Minute + time.Second, false},
		{"AllowBoth's outer counter within its two quarters", outer, 29 * time.Minute, true},
		{"AllowBoth's inner counter after two minutes", inner, 2*time.Minute + time.Second, false},
		{"AllowBoth's outer counter of the previous version after two quarters", outerBefore, 30*time.Minute + time.Second, false},
		{"AllowBoth's inner counter of the previous version within its second minute", innerBefore, 2*time.Minute - 10*time.Second, true},
	}
	for _, c := range counters {
		x.exec(t, `UPDATE rate_limits SET window_start = now() - make_interval(secs => $2) WHERE key = $1`, c.key, c.ago.Seconds())
	}
	if _, err := x.lc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range counters {
		var n int
		if err := x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM rate_limits WHERE key = $1`, c.key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if kept := n == 1; kept != c.kept {
			t.Errorf("%s, its window started %v ago: kept %v, want %v", c.name, c.ago, kept, c.kept)
		}
	}
}
