package lockout

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestEmailKeySpellings: every spelling of one address (letter case,
// surrounding space, precomposed or decomposed letters) counts against one
// key, and another address against another.
func TestEmailKeySpellings(t *testing.T) {
	want := EmailKey("jos\u00e9@example.com")
	for _, s := range []string{"Jos\u00e9@Example.com", " jose\u0301@example.com\t", "JOSE\u0301@EXAMPLE.COM"} {
		if !bytes.Equal(EmailKey(s), want) {
			t.Errorf("EmailKey(%+q) differs from EmailKey(%+q)", s, "jos\u00e9@example.com")
		}
	}
	if bytes.Equal(EmailKey("jose@example.com"), want) {
		t.Error("EmailKey confuses jose@ with jos\u00e9@")
	}
}

// TestReservePerIPv6Prefix: the addresses of one IPv6 /64 are one client:
// a host that is given a /64 cannot take Threshold guesses from each of
// its 2^64 addresses.
func TestReservePerIPv6Prefix(t *testing.T) {
	ctx := context.Background()
	s := New(dbtest.New(t).Pool, Default())
	key := EmailKey("six@example.com")
	for i := range Default().Threshold {
		if wait, err := s.Reserve(ctx, key, "2001:db8:1:2::"+strconv.Itoa(i+1)); err != nil || wait != 0 {
			t.Fatalf("guess %d: wait %d, %v", i+1, wait, err)
		}
	}
	if wait, err := s.Reserve(ctx, key, "2001:db8:1:2:ffff::9"); err != nil || wait == 0 {
		t.Fatalf("another address of the /64 after %d guesses: wait %d, %v; want locked", Default().Threshold, wait, err)
	}
	if wait, err := s.Reserve(ctx, key, "2001:db8:1:3::1"); err != nil || wait != 0 {
		t.Fatalf("another /64: wait %d, %v; want a guess", wait, err)
	}
}

// TestSuccessesDoNotCountForTheKey: the key's own count (every client
// together) holds failures only. A correct guess gives back the attempt it
// reserved there as well as clearing its client's count: an owner who
// signs in often (or gives a code every day, in the codes' day-long
// window) used to reach AccountThreshold with right answers alone, and was
// then locked for up to AccountMax after a single typo.
func TestSuccessesDoNotCountForTheKey(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	codes := Default()
	codes.Window = 24 * time.Hour
	for name, p := range map[string]Policy{"passwords": Default(), "codes": codes} {
		t.Run(name, func(t *testing.T) {
			s := New(pool, p)
			key := EmailKey(name + "@example.com")
			const ip = "192.0.2.1"
			for i := range 2 * p.AccountThreshold {
				if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
					t.Fatalf("correct guess %d: wait %d, %v", i+1, wait, err)
				}
				if err := s.Release(ctx, key, ip); err != nil {
					t.Fatal(err)
				}
			}
			if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 { // a typo
				t.Fatalf("first wrong guess: wait %d, %v", wait, err)
			}
			if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
				t.Fatalf("the guess after one failure: locked for %d s (%v), want none", wait, err)
			}
		})
	}
}

// TestSweepDoesNotDeadlockWithReserve: a Reserve locks the key's row and
// then the pair's. A sweep that deleted stale rows in table order, with
// the pair's row first, held it while it waited for the key's row the
// Reserve held, and the Reserve then waited for the pair's: PostgreSQL
// ended the deadlock by failing one of them (a sign-in answered 500).
// The sweep passes over rows in use instead.
func TestSweepDoesNotDeadlockWithReserve(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	s := New(pool, Default())
	key := EmailKey("swept@example.com")
	const ip = "192.0.2.7"
	// Both rows stale, the pair's first in the table.
	for _, row := range []struct {
		client string
		age    string
	}{{clientKey(ip), "2 hours"}, {"", "1 hour"}} {
		if _, err := pool.Exec(ctx, `INSERT INTO login_attempts (email_hash, client_ip, failures, last_attempt)
VALUES ($1, $2, 1, now() - $3::interval)`, key, row.client, row.age); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	// What login_reserve does first: lock the key's row.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM login_attempts WHERE email_hash = $1 AND client_ip = '' FOR UPDATE`, key); err != nil {
		t.Fatal(err)
	}
	swept := make(chan error, 1)
	go func() {
		_, err := s.Sweep(ctx)
		swept <- err
	}()
	// Let the sweep run until it finishes or waits on a lock.
	deadline := time.Now().Add(10 * time.Second)
wait:
	for {
		select {
		case err := <-swept:
			swept <- err
			break wait
		default:
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Then the rest of login_reserve, in the same transaction: the pair.
	var wait int
	l := Default()
	if err := tx.QueryRow(ctx, `SELECT login_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9)`, key, clientKey(ip), networkKey(ip), l.Window.Seconds(),
		l.Threshold, l.Base.Seconds(), l.Max.Seconds(), l.AccountThreshold, l.AccountMax.Seconds()).Scan(&wait); err != nil {
		t.Fatalf("reserve while a sweep runs: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit the reserve: %v", err)
	}
	if err := <-swept; err != nil {
		t.Fatalf("sweep: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM login_attempts WHERE email_hash = $1`, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("%d rows for the key after the reserve, want 2 (the key's and the pair's)", n)
	}
}

// TestCountRunsOnAfterALock: a client that waits out its lock goes on
// counting, so its next failure locks it again. The count used to start
// afresh when the lock had outlasted the window since the last attempt
// (the longest lock, 15 minutes, equals the default window), giving
// Threshold more guesses after every longest lock: some 28 an hour from
// one client. And the sweep keeps a count whose lock ended within the
// window, or the count would start afresh all the same.
func TestCountRunsOnAfterALock(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	p := Policy{Threshold: 2, Base: 2 * time.Second, Max: 2 * time.Second, Window: time.Second,
		AccountThreshold: 100, AccountMax: time.Second}
	s := New(pool, p)
	key := EmailKey("patient@example.com")
	const ip = "192.0.2.9"
	reserve := func(what string, wantLocked bool) {
		t.Helper()
		wait, err := s.Reserve(ctx, key, ip)
		if err != nil {
			t.Fatal(err)
		}
		if (wait > 0) != wantLocked {
			t.Fatalf("%s: wait %d s, want locked %v", what, wait, wantLocked)
		}
	}
	reserve("first guess", false)
	reserve("second guess (locks)", false)
	reserve("during the lock", true)
	time.Sleep(p.Max + 100*time.Millisecond) // the lock is over, and so is a window since the last attempt
	reserve("the guess after the lock", false)
	reserve("the next one", true)

	// The sweep keeps a count whose lock ended within the window.
	other := EmailKey("swept-late@example.com")
	if _, err := pool.Exec(ctx, `INSERT INTO login_attempts (email_hash, client_ip, failures, last_attempt, locked_until)
VALUES ($1, $2, 9, now() - interval '2 hours', now() - interval '1 minute')`, other, clientKey(ip)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(pool, Default()).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM login_attempts WHERE email_hash = $1`, other).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatal("the sweep deleted a count whose lock ended a minute ago, within the window")
	}
}

// TestManyClientsDoNotBreakTheKey: the key's count grows with every
// client's failure while they keep coming within Window, and the
// address-wide lock is Base·2^(attempts−AccountThreshold), at most
// AccountMax. Past some 1,044 attempts the power of two no longer fits a
// float8, and PostgreSQL failed the statement ("value out of range"): from
// then on every sign-in to the address, the owner's from a client that
// never failed included, was an error until the count went stale. Clients
// enough for that are one guess each from the /64s of one IPv6 /48.
func TestManyClientsDoNotBreakTheKey(t *testing.T) {
	ctx := context.Background()
	s := New(dbtest.New(t).Pool, Default())
	key := EmailKey("target@example.com")
	const clients = 1100
	for i := range clients {
		ip := "2001:db8:" + strconv.FormatInt(int64(i), 16) + "::1" // a /64 of its own
		if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
			t.Fatalf("client %d's first guess: wait %d, %v; want a guess (it never failed for the key)", i+1, wait, err)
		}
	}
	if wait, err := s.Reserve(ctx, key, "192.0.2.77"); err != nil || wait != 0 {
		t.Fatalf("the owner's sign-in after %d clients' guesses: wait %d, %v; want a guess", clients, wait, err)
	}
	// A client that failed is still slowed, at most AccountMax.
	if wait, err := s.Reserve(ctx, key, "2001:db8:0::1"); err != nil || wait <= 0 || wait > int(Default().AccountMax.Seconds()) {
		t.Fatalf("a client that failed: wait %d, %v; want 1-%d s", wait, err, int(Default().AccountMax.Seconds()))
	}
}

// TestRefundUndoesOneAttempt: a refunded attempt leaves the counts as they
// were before it, and lifts the lock it set reaching the threshold; the
// attempts before it still count.
func TestRefundUndoesOneAttempt(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	s := New(pool, Default())
	key := EmailKey("refund@example.com")
	const ip = "192.0.2.7"
	failures := func() (pair, acct int) {
		t.Helper()
		const q = `SELECT coalesce(sum(failures) FILTER (WHERE client_ip <> ''), 0), coalesce(sum(failures) FILTER (WHERE client_ip = ''), 0)
FROM login_attempts WHERE email_hash = $1`
		if err := pool.QueryRow(ctx, q, key).Scan(&pair, &acct); err != nil {
			t.Fatal(err)
		}
		return pair, acct
	}
	for i := range Default().Threshold {
		if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
			t.Fatalf("guess %d: wait %d, %v", i+1, wait, err)
		}
	}
	if err := s.Refund(ctx, key, ip); err != nil {
		t.Fatal(err)
	}
	if pair, acct := failures(); pair != Default().Threshold-1 || acct != Default().Threshold-1 {
		t.Fatalf("after a refund: %d and %d failures, want %d each", pair, acct, Default().Threshold-1)
	}
	if wait, err := s.Reserve(ctx, key, ip); err != nil || wait != 0 {
		t.Fatalf("after the refund of the attempt that locked: wait %d, %v; want the guess it gave back", wait, err)
	}
	if wait, err := s.Reserve(ctx, key, ip); err != nil || wait == 0 {
		t.Fatalf("past the threshold with real failures: wait %d, %v; want locked", wait, err)
	}
}

// refundPolicy locks a client at its third guess and the key at its
// fourth, each for a minute at first: longer than any of these tests.
func refundPolicy() Policy {
	return Policy{Threshold: 3, Base: time.Minute, Max: time.Hour, Window: time.Hour, AccountThreshold: 4, AccountMax: time.Hour}
}

// reserveN takes n guesses for key from ip, each one allowed.
func reserveN(t *testing.T, s *Store, key []byte, ip string, n int) {
	t.Helper()
	for i := range n {
		if wait, err := s.Reserve(context.Background(), key, ip); err != nil || wait != 0 {
			t.Fatalf("%s's guess %d: wait %d, %v; want a guess", ip, i+1, wait, err)
		}
	}
}

// TestRefundLiftsTheKeysLock: the key's own count is measured against
// AccountThreshold, not a client's Threshold: a refund of the attempt
// that brought the key to AccountThreshold lifts its lock, and the
// clients that failed for it guess again.
func TestRefundLiftsTheKeysLock(t *testing.T) {
	ctx := context.Background()
	s := New(dbtest.New(t).Pool, refundPolicy())
	key := EmailKey("refund-key@example.com")
	const x, y = "192.0.2.1", "192.0.2.2"
	reserveN(t, s, key, x, 2)
	reserveN(t, s, key, y, 2) // the key's fourth: locked
	if wait, err := s.Reserve(ctx, key, x); err != nil || wait == 0 {
		t.Fatalf("a client that failed, the key at AccountThreshold: wait %d, %v; want locked", wait, err)
	}
	if err := s.Refund(ctx, key, y); err != nil {
		t.Fatal(err)
	}
	if wait, err := s.Reserve(ctx, key, x); err != nil || wait != 0 {
		t.Fatalf("after the refund of the attempt that locked the key: wait %d, %v; want a guess", wait, err)
	}
}

// TestRefundKeepsALockAboveItsThreshold: a lock set by a count above the
// threshold (a client that went on after waiting out a lock; the key
// guessed for by a client that never failed) stays after a refund: the
// count without the attempt would have locked all the same.
func TestRefundKeepsALockAboveItsThreshold(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	t.Run("client", func(t *testing.T) {
		p := refundPolicy()
		p.AccountThreshold = 20
		s := New(pool, p)
		key := EmailKey("refund-client@example.com")
		const ip = "192.0.2.3"
		reserveN(t, s, key, ip, p.Threshold) // locked
		// The lock waited out: the next guess counts on, and locks again.
		if _, err := pool.Exec(ctx, `UPDATE login_attempts SET locked_until = now() - interval '1 second' WHERE email_hash = $1 AND client_ip <> ''`, key); err != nil {
			t.Fatal(err)
		}
		reserveN(t, s, key, ip, 1)
		if err := s.Refund(ctx, key, ip); err != nil {
			t.Fatal(err)
		}
		if wait, err := s.Reserve(ctx, key, ip); err != nil || wait == 0 {
			t.Fatalf("after a refund, %d failures left at Threshold %d: wait %d, %v; want locked", p.Threshold, p.Threshold, wait, err)
		}
	})
	t.Run("key", func(t *testing.T) {
		s := New(pool, refundPolicy())
		key := EmailKey("refund-above@example.com")
		const x, y, z = "192.0.2.4", "192.0.2.5", "192.0.2.6"
		reserveN(t, s, key, x, 2)
		reserveN(t, s, key, y, 2) // the key's fourth: locked
		reserveN(t, s, key, z, 1) // a client that never failed: the fifth, locked again
		if err := s.Refund(ctx, key, z); err != nil {
			t.Fatal(err)
		}
		if wait, err := s.Reserve(ctx, key, x); err != nil || wait == 0 {
			t.Fatalf("after a refund, the key's count at AccountThreshold: wait %d, %v; want locked", wait, err)
		}
	})
}
