package ratelimit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
)

func TestAllowCountsPerKeyAndWindow(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 3, Window: time.Hour}
	a, b := ratelimit.Key("forgot", "addr", "a@example.com"), ratelimit.Key("forgot", "addr", "b@example.com")
	for i := 1; i <= 3; i++ {
		ok, _, err := l.Allow(ctx, a, lim)
		if err != nil || !ok {
			t.Fatalf("hit %d = %v, %v; want allowed", i, ok, err)
		}
	}
	ok, retry, err := l.Allow(ctx, a, lim)
	if err != nil || ok {
		t.Fatalf("4th hit = %v, %v; want refused", ok, err)
	}
	if retry <= 0 || retry > time.Hour {
		t.Errorf("retry after %v, want within the hour window", retry)
	}
	if ok, _, err := l.Allow(ctx, b, lim); err != nil || !ok {
		t.Errorf("another key = %v, %v; want allowed", ok, err)
	}
	// An ended window starts again.
	if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = now() - interval '2 hours' WHERE key = $1`, a); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := l.Allow(ctx, a, lim); err != nil || !ok {
		t.Errorf("after the window = %v, %v; want allowed", ok, err)
	}
	// Both counters still count: the sweep keeps them.
	if n, err := l.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("sweep = %d, %v; want 0 rows", n, err)
	}
}

// Concurrent hits are each counted once: exactly N of them pass.
func TestAllowConcurrent(t *testing.T) {
	db := dbtest.New(t)
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 5, Window: time.Hour}
	key := ratelimit.Key("ip", "192.0.2.1")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _, err := l.Allow(context.Background(), key, lim)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != 5 {
		t.Errorf("allowed %d of 20 concurrent hits, want 5", allowed)
	}
}

// A released hit is not counted: reservations that succeed never add up.
func TestRelease(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 2, Window: time.Hour}
	k := ratelimit.Key("client", "id", "ip")
	for i := range 5 {
		h, ok, _, err := l.Reserve(ctx, k, lim)
		if err != nil || !ok {
			t.Fatalf("reservation %d = %v, %v; want allowed (each released)", i, ok, err)
		}
		if err := l.Release(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if ok, _, err := l.Allow(ctx, k, lim); err != nil || !ok {
			t.Fatalf("failure %d = %v, %v; want allowed", i, ok, err)
		}
	}
	if ok, _, err := l.Allow(ctx, k, lim); err != nil || ok {
		t.Fatalf("third failure = %v, %v; want refused", ok, err)
	}
	gone := ratelimit.Key("swept")
	h, _, _, err := l.Reserve(ctx, gone, lim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `DELETE FROM rate_limits WHERE key = $1`, gone); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, h); err != nil {
		t.Fatalf("release of a swept key: %v", err)
	}
	if err := l.Release(ctx, ratelimit.Hit{}); err != nil {
		t.Fatalf("release of no hit: %v", err)
	}
}

// TestRefusedHitsAreNotCounted: a hit the limit refuses is not counted, so
// the reservations it let through, once released (a correct secret or
// password), leave room again: a burst of correct attempts larger than the
// limit, answered 429 beyond it, does not leave the budget spent without a
// single failure. The limit still holds: N reservations, no more, pass
// while none is released.
func TestRefusedHitsAreNotCounted(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 3, Window: time.Hour}
	k := ratelimit.Key("client", "id", "ip")
	var held []ratelimit.Hit
	for i := range lim.N {
		h, ok, _, err := l.Reserve(ctx, k, lim)
		if err != nil || !ok {
			t.Fatalf("reservation %d = %v, %v; want allowed", i, ok, err)
		}
		held = append(held, h)
	}
	for i := range 2 * lim.N {
		if ok, retry, err := l.Allow(ctx, k, lim); err != nil || ok || retry <= 0 {
			t.Fatalf("reservation %d past the limit = %v, %v, %v; want refused with a wait", lim.N+i, ok, retry, err)
		}
	}
	for _, h := range held {
		if err := l.Release(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for i := range lim.N {
		if ok, _, err := l.Allow(ctx, k, lim); err != nil || !ok {
			t.Fatalf("reservation %d after the first were released = %v, %v; want allowed (refused hits counted)", i, ok, err)
		}
	}
	if ok, _, err := l.Allow(ctx, k, lim); err != nil || ok {
		t.Fatalf("reservation past the limit again = %v, %v; want refused", ok, err)
	}
}

// TestClientKeyIPv6Prefix: the addresses of one IPv6 /64 (what one
// customer line or host is given) are one client; IPv4 addresses, other
// /64s and names that are no address stay apart.
func TestClientKeyIPv6Prefix(t *testing.T) {
	same := []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:0db8:0001:0002:0:0:0:7", "2001:DB8:1:2::abcd"}
	for _, ip := range same[1:] {
		if got, want := ratelimit.ClientKey(ip), ratelimit.ClientKey(same[0]); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q (same /64)", ip, got, want)
		}
	}
	for _, ip := range []string{"2001:db8:1:3::1", "192.0.2.1", "192.0.2.2", "unknown", ""} {
		if ratelimit.ClientKey(ip) == ratelimit.ClientKey(same[0]) {
			t.Errorf("ClientKey(%q) is the /64 2001:db8:1:2::/64", ip)
		}
	}
	if a, b := ratelimit.ClientKey("192.0.2.1"), ratelimit.ClientKey("192.0.2.2"); a == b {
		t.Errorf("two IPv4 addresses share the key %q", a)
	}
	// An IPv4-mapped IPv6 address is its IPv4 address.
	if a, b := ratelimit.ClientKey("::ffff:192.0.2.1"), ratelimit.ClientKey("192.0.2.1"); a != b {
		t.Errorf("ClientKey(::ffff:192.0.2.1) = %q, want %q", a, b)
	}
}

// TestClientKeyEmbeddedIPv4: an IPv6 address that embeds an IPv4 address
// is that IPv4 address's client. A 6to4 /48 (2002:AABB:CCDD::/48) is one
// IPv4 address's, so its 65,536 /64s were 65,536 budgets of one client;
// the NAT64 well-known prefix's one /64 holds every IPv4 address, so all
// its clients were one; Teredo carries its client's address inverted.
func TestClientKeyEmbeddedIPv4(t *testing.T) {
	v4 := ratelimit.ClientKey("192.0.2.1")
	for _, ip := range []string{
		"2002:c000:201::1", "2002:c000:201:1::1", "2002:c000:201:ffff:1:2:3:4",
		"64:ff9b::c000:201", "64:ff9b::192.0.2.1",
		"2001:0:4136:e378:8000:63bf:3fff:fdfe", "2001:0:cb00:7101::3fff:fdfe",
	} {
		if got := ratelimit.ClientKey(ip); got != v4 {
			t.Errorf("ClientKey(%q) = %q, want %q (192.0.2.1)", ip, got, v4)
		}
	}
	for _, ip := range []string{"2002:c000:202::1", "64:ff9b::c000:202", "2001:0:4136:e378:8000:63bf:3fff:fdfd", "2001:db8::1"} {
		if got := ratelimit.ClientKey(ip); got == v4 {
			t.Errorf("ClientKey(%q) = %q, 192.0.2.1's", ip, got)
		}
	}
	if a, b := ratelimit.ClientKey("64:ff9b::c000:201"), ratelimit.ClientKey("64:ff9b::c000:202"); a == b {
		t.Errorf("two NAT64 clients share the key %q", a)
	}
}

// TestSeconds: a Retry-After is whole seconds, rounded up, never 0.
func TestSeconds(t *testing.T) {
	for wait, want := range map[time.Duration]int{0: 1, -time.Second: 1, time.Nanosecond: 1, time.Second: 1,
		time.Second + time.Millisecond: 2, 59*time.Minute + 1: 3541} {
		if got := ratelimit.Seconds(wait); got != want {
			t.Errorf("Seconds(%v) = %d, want %d", wait, got, want)
		}
	}
}

func TestPeriod(t *testing.T) {
	for w, want := range map[time.Duration]string{
		time.Hour: "1 hour", 24 * time.Hour: "24 hours", 15 * time.Minute: "15m0s", 90 * time.Minute: "1h30m0s",
	} {
		if got := (ratelimit.Limit{N: 1, Window: w}).Period(); got != want {
			t.Errorf("Period of %v = %q, want %q", w, got, want)
		}
	}
}

// TestCheckIn: nil while the hits are within the limit, then a *Refused
// carrying what the caller said and the time until a hit is allowed.
func TestCheckIn(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	lim := ratelimit.Limit{N: 2, Window: time.Hour}
	key := ratelimit.Key("check", "x")
	for range 2 {
		if err := ratelimit.CheckIn(ctx, db.Pool, key, lim, "too many"); err != nil {
			t.Fatalf("within the limit: %v", err)
		}
	}
	err := ratelimit.CheckIn(ctx, db.Pool, key, lim, "too many")
	var rf *ratelimit.Refused
	if !errors.As(err, &rf) || rf.What != "too many" || rf.RetryAfter <= 0 || rf.RetryAfter > time.Hour {
		t.Fatalf("over the limit: %v (%+v)", err, rf)
	}
}

// TestAllowBoth: a hit counts on the outer key and, only while that is
// within its limit, on the inner one; a hit the outer limit refuses
// writes no row of its inner key, one the inner limit refuses is not
// counted on the outer key, and ReleaseBoth takes back both hits.
func TestAllowBoth(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	outer, inner := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1")
	lo, li := ratelimit.Limit{N: 3, Window: time.Hour}, ratelimit.Limit{N: 1, Window: time.Minute}
	hits := func(key []byte) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT coalesce((SELECT hits FROM rate_limits WHERE key = $1), -1)`, key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	b, ok, _, err := l.AllowBoth(ctx, outer, lo, inner, li)
	if err != nil || !ok {
		t.Fatalf("first hit = %v, %v; want allowed", ok, err)
	}
	_, ok, retry, err := l.AllowBoth(ctx, outer, lo, inner, li)
	if err != nil || ok || retry <= 0 || retry > time.Minute {
		t.Fatalf("second hit on the inner key = %v, %v, %v; want refused within the inner window", ok, retry, err)
	}
	if o, i := hits(outer), hits(inner); o != 1 || i != 2 {
		t.Fatalf("after the inner refusal: outer %d, inner %d hits; want 1 (not counted) and 2 (full, refused since)", o, i)
	}
	if err := l.ReleaseBoth(ctx, b); err != nil {
		t.Fatal(err)
	}
	if o, i := hits(outer), hits(inner); o != 0 || i != 0 {
		t.Fatalf("after ReleaseBoth: outer %d, inner %d hits; want 0 and 0", o, i)
	}
	// Inner keys of their own fill the outer limit, then one more writes
	// no inner row.
	for n := range lo.N {
		if _, ok, _, err := l.AllowBoth(ctx, outer, lo, ratelimit.Key("client", string(rune('a'+n))), li); err != nil || !ok {
			t.Fatalf("hit %d = %v, %v; want allowed", n, ok, err)
		}
	}
	last := ratelimit.Key("client", "last")
	_, ok, retry, err = l.AllowBoth(ctx, outer, lo, last, li)
	if err != nil || ok || retry <= time.Minute || retry > time.Hour {
		t.Fatalf("hit over the outer limit = %v, %v, %v; want refused within the outer window", ok, retry, err)
	}
	if i := hits(last); i != -1 {
		t.Fatalf("a hit the outer limit refused wrote its inner key's row (%d hits)", i)
	}
}

// TestReleaseBothBesideAllowBoth: ReleaseBoth locks the two rows in
// AllowBoth's order, the outer key's first, so that one client's requests
// at once (a correct secret released while the next is counted) cannot
// deadlock: ReleaseBoth locked them in the table's order, which may put
// the inner row first, and PostgreSQL failed one of the two, a request
// answered 500.
func TestReleaseBothBesideAllowBoth(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	outer, inner := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1")
	lo, li := ratelimit.Limit{N: 100, Window: time.Hour}, ratelimit.Limit{N: 10, Window: time.Hour}
	// The inner row written first, so first in the table.
	for _, k := range [][]byte{inner, outer} {
		if _, _, err := l.Allow(ctx, k, ratelimit.Limit{N: 100, Window: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	b, _, _, err := l.AllowBoth(ctx, outer, lo, inner, li)
	if err != nil {
		t.Fatal(err)
	}
	waiting := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var w int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
				t.Fatal(err)
			}
			if w >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d statements waiting for a lock", n)
			}
		}
	}
	hold, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM rate_limits WHERE key = $1 FOR UPDATE`, inner); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() { released <- l.ReleaseBoth(ctx, b) }()
	waiting(1)
	allowed := make(chan error, 1)
	go func() {
		_, _, _, err := l.AllowBoth(ctx, outer, lo, inner, li)
		allowed <- err
	}()
	waiting(2)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Errorf("ReleaseBoth beside AllowBoth = %v", err)
	}
	if err := <-allowed; err != nil {
		t.Errorf("AllowBoth beside ReleaseBoth = %v", err)
	}
}

// TestSweepBesideAllowBoth: the sweep passes over the counters another
// statement holds, so it cannot deadlock with AllowBoth counting two of
// them whose windows ended a day ago: deleting in the table's order, it
// could hold the inner row while waiting for the outer one AllowBoth
// held, and PostgreSQL failed one of them (a request with a 500).
func TestSweepBesideAllowBoth(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	outer, inner := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1")
	lo, li := ratelimit.Limit{N: 100, Window: time.Hour}, ratelimit.Limit{N: 10, Window: time.Hour}
	// The inner row written first, so first in the table; both windows
	// ended more than a day ago.
	for _, k := range [][]byte{inner, outer} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO rate_limits (key, window_start, hits, window_s) VALUES ($1, now() - interval '2 days', 1, 3600)`, k); err != nil {
			t.Fatal(err)
		}
	}
	waiters := func() int {
		var w int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
			t.Fatal(err)
		}
		return w
	}
	hold, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM rate_limits WHERE key = $1 FOR UPDATE`, inner); err != nil {
		t.Fatal(err)
	}
	swept := make(chan error, 1)
	go func() {
		_, err := l.Sweep(ctx)
		swept <- err
	}()
	var sweepErr error
	sweepDone := false
	for deadline := time.Now().Add(10 * time.Second); !sweepDone && waiters() < 1; time.Sleep(10 * time.Millisecond) {
		select {
		case sweepErr = <-swept:
			sweepDone = true
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweep neither ended nor waits")
		}
	}
	allowed := make(chan error, 1)
	go func() {
		_, _, _, err := l.AllowBoth(ctx, outer, lo, inner, li)
		allowed <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); waiters() < 1 || (!sweepDone && waiters() < 2); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("AllowBoth is not waiting for the inner row")
		}
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !sweepDone {
		sweepErr = <-swept
	}
	if sweepErr != nil {
		t.Errorf("Sweep beside AllowBoth = %v", sweepErr)
	}
	if err := <-allowed; err != nil {
		t.Errorf("AllowBoth beside the sweep = %v", err)
	}
}

// TestSweepReadsItsIndex: the sweep finds the counters two of their
// windows old through the index of that expression (migration 00049),
// not by reading every live counter each round.
func TestSweepReadsItsIndex(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	// 20,000 live counters of an hour, 10 of a minute two minutes old.
	if _, err := db.Pool.Exec(ctx, `
INSERT INTO rate_limits (key, window_start, hits, window_s)
SELECT sha256(i::text::bytea), now() - CASE WHEN i <= 10 THEN interval '3 minutes' ELSE interval '10 minutes' END, 1,
       CASE WHEN i <= 10 THEN 60 ELSE 3600 END
FROM generate_series(1, 20010) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE rate_limits`); err != nil {
		t.Fatal(err)
	}
	plan := db.Plan(t, ratelimit.QSweep, sweep.Batch)
	if !strings.Contains(plan, "rate_limits_kept_until_idx") {
		t.Errorf("the sweep's plan does not read rate_limits_kept_until_idx:\n%s", plan)
	}
	if strings.Contains(plan, "Seq Scan on rate_limits") {
		t.Errorf("the sweep's plan reads the whole table:\n%s", plan)
	}
	if n, err := ratelimit.New(db.Pool).Sweep(ctx); err != nil || n != 10 {
		t.Errorf("Sweep = %d, %v; want the 10 counters of a minute", n, err)
	}
}

// TestNoDoubleBurstAcrossTheBoundary: the hits of the window just ended
// still count, weighted by how much of it the sliding window still
// covers, so N hits just before a window's end and N just after are not
// 2N within moments: a fixed window started afresh and let the second N
// through (PASSWORD_CHECKS_PER_HOUR=1000 was 2,000 argon2 hashes in a
// minute, a per-address mail limit twice its mails). As the previous
// window slides out of reach its hits give way: half of them halfway
// through the next window, none once it has passed.
func TestNoDoubleBurstAcrossTheBoundary(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 10, Window: time.Hour}
	k := ratelimit.Key("password-check", "192.0.2.1")
	allowed := func(n int) (int, time.Duration) {
		t.Helper()
		got, wait := 0, time.Duration(0)
		for range n {
			ok, retry, err := l.Allow(ctx, k, lim)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				got++
			} else {
				wait = retry
			}
		}
		return got, wait
	}
	// start moves the key's window so that it began ago.
	start := func(ago time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = now() - make_interval(secs => $2) WHERE key = $1`,
			k, ago.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := allowed(lim.N); got != lim.N {
		t.Fatalf("%d of the first %d hits allowed, want all", got, lim.N)
	}
	// Those hits were the window's last moments: it ended 10 s ago.
	start(lim.Window + 10*time.Second)
	got, wait := allowed(lim.N)
	if got > 1 {
		t.Fatalf("%d of %d hits allowed 10 s after a full window ended, want at most 1 (the fixed window let 2N through)", got, lim.N)
	}
	// The previous window's 10 hits weigh 9.97 10 s into the next one, so
	// one hit was allowed; with it, the count falls under 10 once the
	// previous hits weigh under 9, a tenth of the window (6 minutes) into
	// it: 350 s from now.
	if wait < 349*time.Second || wait > 351*time.Second {
		t.Errorf("retry after %v, want about 350 s (until the weighted count falls under %d)", wait, lim.N)
	}
	// The refused hits were not counted: the window's own is the one let
	// through, the previous one's are kept beside it.
	var hits, prev int
	if err := db.Pool.QueryRow(ctx, `SELECT hits, prev_hits FROM rate_limits WHERE key = $1`, k).Scan(&hits, &prev); err != nil {
		t.Fatal(err)
	}
	if hits != 1 || prev != lim.N {
		t.Errorf("after the refusals: %d hits and %d before, want 1 and %d", hits, prev, lim.N)
	}
	// Nearly halfway through the new window a little over half of the
	// previous one's hits still count: 5.17 + 1, so 4 more are allowed.
	start(lim.Window/2 - time.Minute)
	if got, _ := allowed(lim.N); got != 4 {
		t.Errorf("%d hits allowed 29 minutes into the window after a full one, want 4", got)
	}
	// Once the window after has passed too, nothing of them counts.
	start(2*lim.Window + time.Second)
	if got, _ := allowed(lim.N); got != lim.N {
		t.Errorf("%d of %d hits allowed two windows later, want all", got, lim.N)
	}
}

// TestAllowBothAcrossTheBoundary: AllowBoth counts both keys in sliding
// windows: a hit the previous window's weight refuses on the outer key
// writes nothing of the inner one, and one it refuses on the inner key is
// not counted on the outer one, each with the wait until its count falls
// under its limit.
func TestAllowBothAcrossTheBoundary(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	outer, inner := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1")
	lo, li := ratelimit.Limit{N: 4, Window: time.Hour}, ratelimit.Limit{N: 2, Window: 15 * time.Minute}
	row := func(key []byte) (hits, prev int) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT coalesce((SELECT hits FROM rate_limits WHERE key = $1), -1),
    coalesce((SELECT prev_hits FROM rate_limits WHERE key = $1), -1)`, key).Scan(&hits, &prev); err != nil {
			t.Fatal(err)
		}
		return hits, prev
	}
	// The inner key's window, full, ended a minute ago.
	for range li.N {
		if _, ok, _, err := l.AllowBoth(ctx, outer, lo, inner, li); err != nil || !ok {
			t.Fatalf("hit = %v, %v; want allowed", ok, err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = now() - interval '16 minutes' WHERE key = $1`, inner); err != nil {
		t.Fatal(err)
	}
	_, ok, _, err := l.AllowBoth(ctx, outer, lo, inner, li)
	// 2 × 14/15 = 1.87 counted: one hit allowed (2.87), under 2 again once
	// the previous window's weigh under 1, 7.5 minutes into the window.
	if err != nil || !ok {
		t.Fatalf("first hit after the inner window = %v, %v; want allowed", ok, err)
	}
	_, ok, retry, err := l.AllowBoth(ctx, outer, lo, inner, li)
	if err != nil || ok || retry < 6*time.Minute || retry > 7*time.Minute {
		t.Fatalf("second hit after the inner window = %v, %v, %v; want refused for 6.5 minutes", ok, retry, err)
	}
	if o, _ := row(outer); o != 3 {
		t.Fatalf("outer key: %d hits after the inner refusal, want 3 (not counted)", o)
	}
	if i, p := row(inner); i != 1 || p != li.N {
		t.Fatalf("inner key: %d hits, %d before, want 1 and %d", i, p, li.N)
	}
	// The outer key's window, full, ended 10 s ago; a new inner key is let
	// through once (3.99 + 1 counted), then refused, unwritten, until the
	// previous window's weigh under 3, a quarter of the window into it.
	if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = now() - interval '1 hour 10 seconds', hits = $2 WHERE key = $1`,
		outer, lo.N); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, err := l.AllowBoth(ctx, outer, lo, ratelimit.Key("client", "c2"), li); err != nil || !ok {
		t.Fatalf("first hit after the outer window = %v, %v; want allowed", ok, err)
	}
	last := ratelimit.Key("client", "c3")
	_, ok, retry, err = l.AllowBoth(ctx, outer, lo, last, li)
	if err != nil || ok || retry < 14*time.Minute || retry > 15*time.Minute {
		t.Fatalf("second hit after the outer window = %v, %v, %v; want refused for 890 s", ok, retry, err)
	}
	if i, _ := row(last); i != -1 {
		t.Fatalf("a hit the outer limit refused wrote its inner key's row (%d hits)", i)
	}
	if o, p := row(outer); o != 1 || p != lo.N {
		t.Fatalf("outer key: %d hits, %d before, want 1 and %d", o, p, lo.N)
	}
}

// TestBesideAFixedWindowReplica: during a rollout, a replica of the
// previous version counts with its own statement, which knows nothing of
// the columns migration 00048 adds: its inserts take their defaults, it
// reads the hits a new replica counted (and its "full, and refused
// since") as its own, a window a new replica moved on as one not ended,
// and neither kind lets more than N through in one window.
func TestBesideAFixedWindowReplica(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 3, Window: time.Hour}
	k := ratelimit.Key("signup", "192.0.2.1")
	// The previous version's statement.
	const qOld = `INSERT INTO rate_limits AS r (key, window_start, hits) VALUES ($1, now(), 1)
ON CONFLICT (key) DO UPDATE SET
    window_start = CASE WHEN r.window_start <= now() - make_interval(secs => $2) THEN now() ELSE r.window_start END,
    hits         = CASE WHEN r.window_start <= now() - make_interval(secs => $2) THEN 1 ELSE least(r.hits + 1, $3 + 1) END
RETURNING hits`
	old := func() bool {
		t.Helper()
		var hits int
		if err := db.Pool.QueryRow(ctx, qOld, k, lim.Window.Seconds(), lim.N).Scan(&hits); err != nil {
			t.Fatalf("the previous version's statement: %v", err)
		}
		return hits <= lim.N
	}
	var last ratelimit.Hit // the new replica's last hit allowed
	allow := func() bool {
		t.Helper()
		h, ok, _, err := l.Reserve(ctx, k, lim)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			last = h
		}
		return ok
	}
	for i, c := range []struct {
		old, want bool
	}{{true, true}, {false, true}, {false, true}, {true, false}, {false, false}} {
		got := allow
		if c.old {
			got = old
		}
		if ok := got(); ok != c.want {
			t.Fatalf("hit %d (old replica %v) allowed %v, want %v", i+1, c.old, ok, c.want)
		}
	}
	if err := l.Release(ctx, last); err != nil {
		t.Fatal(err)
	}
	if !old() {
		t.Fatal("the old replica refused a hit after a release")
	}
	// The window ended 10 s ago: a new replica lets one more through
	// (2.99 + 1) and moves the window on; the old replica counts in that
	// window, as its own, and lets one more through (its 2 of 3), after
	// which the new replica's count is full.
	if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = now() - interval '1 hour 10 seconds' WHERE key = $1`, k); err != nil {
		t.Fatal(err)
	}
	if !allow() {
		t.Fatal("the new replica refused the first hit after the window")
	}
	if !old() {
		t.Fatal("the old replica refused its first hit in the window the new one moved on")
	}
	if allow() {
		t.Fatal("the new replica allowed a hit over its sliding count")
	}
}

// TestReleaseAfterTheWindowTurned: a hit released after its window ended
// is taken back from the window it was counted in, whose hits the next
// window carries as the previous one's, never from the hits of the
// window after. Taken back from those, it erased a hit counted since
// (sign-ins correct just before an hour's turn released just after it
// wiped as many failures made just after, which the previous window's
// weight then let through again as it slid out: up to a hit more for
// each release), or, with none counted yet, it was lost, and the
// previous window's full weight refused every hit for most of the window.
func TestReleaseAfterTheWindowTurned(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	lim := ratelimit.Limit{N: 10, Window: time.Hour}
	// pass makes d pass for the key k: its window starts d earlier, and
	// so do the windows its hits held were counted in.
	pass := func(k []byte, d time.Duration, held []ratelimit.Hit) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE rate_limits SET window_start = window_start - make_interval(secs => $2) WHERE key = $1`,
			k, d.Seconds()); err != nil {
			t.Fatal(err)
		}
		for i := range held {
			held[i] = held[i].Earlier(d)
		}
	}
	reserve := func(k []byte, n int) []ratelimit.Hit {
		t.Helper()
		var hits []ratelimit.Hit
		for i := range n {
			h, ok, _, err := l.Reserve(ctx, k, lim)
			if err != nil || !ok {
				t.Fatalf("reservation %d = %v, %v; want allowed", i, ok, err)
			}
			hits = append(hits, h)
		}
		return hits
	}
	release := func(hits []ratelimit.Hit) {
		t.Helper()
		for _, h := range hits {
			if err := l.Release(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	allowed := func(k []byte, n int) int {
		t.Helper()
		got := 0
		for range n {
			ok, _, err := l.Allow(ctx, k, lim)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				got++
			}
		}
		return got
	}
	row := func(k []byte) (hits, prev int) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT hits, prev_hits FROM rate_limits WHERE key = $1`, k).Scan(&hits, &prev); err != nil {
			t.Fatal(err)
		}
		return hits, prev
	}

	t.Run("hits counted since", func(t *testing.T) {
		k := ratelimit.Key("password-guess", "192.0.2.1")
		// Five correct sign-ins under way as the window ends.
		held := reserve(k, 5)
		pass(k, lim.Window+10*time.Second, held)
		// Failures just after: 4.99 + 5 counted lets a sixth through.
		if got := allowed(k, lim.N); got != 6 {
			t.Fatalf("%d failures allowed after the turn, want 6", got)
		}
		release(held)
		if hits, prev := row(k); hits != 6 || prev != 0 {
			t.Fatalf("after the releases: %d hits and %d before, want 6 (the failures) and 0", hits, prev)
		}
		// Near the window's end the failures still count in full: the
		// window lets 10 through, not 15 (the released hits' weight gone
		// with the window before, and the failures erased).
		pass(k, lim.Window-time.Minute-10*time.Second, nil)
		if got := allowed(k, lim.N); got != 4 {
			t.Errorf("%d failures allowed at the end of the window, want 4 (10 in the window)", got)
		}
	})
	t.Run("none counted since", func(t *testing.T) {
		k := ratelimit.Key("password-guess", "192.0.2.2")
		held := reserve(k, lim.N)
		pass(k, lim.Window+10*time.Second, held)
		// 9.97 counted: one more is let through, and the row moves on.
		if got := allowed(k, 2); got != 1 {
			t.Fatalf("%d hits allowed just after a full window, want 1", got)
		}
		release(held)
		if hits, prev := row(k); hits != 1 || prev != 0 {
			t.Fatalf("after the releases: %d hits and %d before, want 1 and 0", hits, prev)
		}
		if got := allowed(k, lim.N); got != lim.N-1 {
			t.Errorf("%d hits allowed once every reservation was released, want %d", got, lim.N-1)
		}
	})
	t.Run("row not moved on yet", func(t *testing.T) {
		k := ratelimit.Key("password-guess", "192.0.2.3")
		held := reserve(k, lim.N)
		pass(k, lim.Window+10*time.Second, held)
		release(held[:5])
		// 4.99 counted.
		if got := allowed(k, lim.N); got != 6 {
			t.Errorf("%d hits allowed after the turn with 5 of 10 released, want 6", got)
		}
	})
	t.Run("two windows later", func(t *testing.T) {
		k := ratelimit.Key("password-guess", "192.0.2.4")
		held := reserve(k, 3)
		pass(k, 2*lim.Window+time.Second, held)
		if got := allowed(k, lim.N); got != lim.N {
			t.Fatalf("%d hits allowed two windows later, want %d", got, lim.N)
		}
		release(held)
		if hits, prev := row(k); hits != lim.N || prev != 0 {
			t.Errorf("after releasing hits that no longer count: %d hits and %d before, want %d and 0", hits, prev, lim.N)
		}
	})
}

// holdAfterFirst is a query tracer that lets a pool's first statement
// through and holds each later one until open is closed (or 10 s pass).
type holdAfterFirst struct {
	mu   sync.Mutex
	n    int
	open chan struct{}
}

func (h *holdAfterFirst) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	if n > 1 {
		select {
		case <-h.open:
		case <-time.After(10 * time.Second):
		}
	}
	return ctx
}

func (h *holdAfterFirst) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestAllowBothInnerRefusalLeavesTheOuterRoom: a hit the inner limit
// refuses never holds the outer limit's last place, not even for a
// moment. AllowBoth counted the outer hit, then gave it back in a second
// statement when the inner limit refused: a request of the same client IP
// waiting for the outer row counted between the two, found the budget
// spent and was refused 429 although it had room. Here the first
// request's inner row is held so that the second queues behind its outer
// one, and any statement the first makes after its first is held until
// the second has its answer.
func TestAllowBothInnerRefusalLeavesTheOuterRoom(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	outer, inner, other := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1"), ratelimit.Key("client", "c2")
	lo, li := ratelimit.Limit{N: 2, Window: time.Hour}, ratelimit.Limit{N: 1, Window: time.Hour}
	l := ratelimit.New(db.Pool)
	// The address has one hit of its two left; the inner key c1 none.
	for _, c := range []struct {
		key []byte
		lim ratelimit.Limit
	}{{outer, lo}, {inner, li}} {
		if ok, _, err := l.Allow(ctx, c.key, c.lim); err != nil || !ok {
			t.Fatalf("setup hit = %v, %v", ok, err)
		}
	}
	gate := &holdAfterFirst{open: make(chan struct{})}
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = gate
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	gated := ratelimit.New(pool)
	type answer struct {
		ok    bool
		retry time.Duration
		err   error
	}
	hold := db.Hold(t, `SELECT 1 FROM rate_limits WHERE key = $1 FOR UPDATE`, inner)
	first := dbtest.AnsweredOrWaiting(t, db, func() answer {
		_, ok, retry, err := gated.AllowBoth(ctx, outer, lo, inner, li)
		return answer{ok, retry, err}
	})
	second := dbtest.AnsweredOrWaitingFor(t, db, 2, func() answer {
		_, ok, retry, err := l.AllowBoth(ctx, outer, lo, other, li)
		return answer{ok, retry, err}
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b := second()
	close(gate.open)
	a := first()
	if a.err != nil || a.ok || a.retry <= 0 || a.retry > li.Window {
		t.Errorf("the hit on the spent inner key = %v, %v, %v; want refused within the inner window", a.ok, a.retry, a.err)
	}
	if b.err != nil || !b.ok {
		t.Errorf("the other inner key's hit, the outer key at its last place = %v, %v, %v; want allowed", b.ok, b.retry, b.err)
	}
	var hits int
	if err := db.Pool.QueryRow(ctx, `SELECT hits FROM rate_limits WHERE key = $1`, outer).Scan(&hits); err != nil {
		t.Fatal(err)
	}
	if hits != lo.N {
		t.Errorf("outer key: %d hits, want %d (the setup's and the second request's)", hits, lo.N)
	}
}

// TestAllowBothBesideANewOuterRow: a request that finds no row of its
// outer key, while another request is creating it, counts on the row the
// other created, and when that is full writes nothing of its inner key,
// as if it had found the row from the start.
func TestAllowBothBesideANewOuterRow(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	l := ratelimit.New(db.Pool)
	outer, inner := ratelimit.Key("ip", "192.0.2.1"), ratelimit.Key("client", "c1")
	lo, li := ratelimit.Limit{N: 2, Window: time.Hour}, ratelimit.Limit{N: 5, Window: time.Hour}
	// Another request's new outer row, not committed yet, that spends the
	// outer limit.
	hold := db.Hold(t, `INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, now(), $2)`, outer, lo.N)
	type answer struct {
		ok    bool
		retry time.Duration
		err   error
	}
	res := dbtest.AnsweredOrWaiting(t, db, func() answer {
		_, ok, retry, err := l.AllowBoth(ctx, outer, lo, inner, li)
		return answer{ok, retry, err}
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a := res(); a.err != nil || a.ok || a.retry <= 0 || a.retry > lo.Window {
		t.Fatalf("hit beside the new full outer row = %v, %v, %v; want refused within the outer window", a.ok, a.retry, a.err)
	}
	var rows int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM rate_limits WHERE key = $1`, inner).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("a hit the outer limit refused wrote its inner key's row")
	}
}

// TestAllowBothConcurrent: concurrent hits on an outer key without a row
// yet are each counted once, exactly N of them pass, and only those write
// a row of their inner key (whichever finds the row missing and then made
// by another runs again on it).
func TestAllowBothConcurrent(t *testing.T) {
	db := dbtest.New(t)
	l := ratelimit.New(db.Pool)
	outer := ratelimit.Key("ip", "192.0.2.1")
	lo, li := ratelimit.Limit{N: 5, Window: time.Hour}, ratelimit.Limit{N: 10, Window: time.Hour}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for n := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, _, err := l.AllowBoth(context.Background(), outer, lo, ratelimit.Key("client", string(rune('a'+n))), li)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != lo.N {
		t.Errorf("allowed %d of 20 concurrent hits, want %d", allowed, lo.N)
	}
	var rows, hits int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) - 1, sum(hits) FILTER (WHERE key = $1) FROM rate_limits`, outer).
		Scan(&rows, &hits); err != nil {
		t.Fatal(err)
	}
	if rows != lo.N || hits != lo.N+1 {
		t.Errorf("%d inner rows and %d outer hits, want %d and %d (full, refused since)", rows, hits, lo.N, lo.N+1)
	}
}
