package sweep_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
)

func TestEveryRunsEachTaskUntilCancelled(t *testing.T) {
	var logs testkit.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var order []string
	rec := func(name string, n int64, err error) sweep.Task {
		return sweep.Task{Name: name, Run: func(context.Context) (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, name)
			if len(order) >= 6 {
				cancel()
			}
			return n, err
		}}
	}
	done := make(chan error, 1)
	go func() {
		done <- sweep.Every(ctx, time.Millisecond, log, slog.LevelInfo,
			rec("failing", 0, errors.New("boom")), rec("rows", 3, nil), rec("empty", 0, nil))
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Every = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	mu.Lock()
	got := strings.Join(order[:6], ",")
	mu.Unlock()
	// A failing task does not stop the others or the next round.
	if got != "failing,rows,empty,failing,rows,empty" {
		t.Errorf("runs = %s", got)
	}
	out := logs.String()
	for _, want := range []string{`level=WARN msg="sweep failing" err=boom`, `level=INFO msg="swept rows" rows=3`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "swept empty") {
		t.Errorf("a task that removed nothing was logged:\n%s", out)
	}
}

// runsOf returns a task that sends its name on runs each time it runs,
// after calling do (which may panic).
func runsOf(name string, runs chan<- string, do func()) sweep.Task {
	return sweep.Task{Name: name, Run: func(ctx context.Context) (int64, error) {
		select {
		case runs <- name:
		case <-ctx.Done():
		}
		do()
		return 0, nil
	}}
}

// next waits for the next run a test expects.
func next(t *testing.T, runs <-chan string, want string) {
	t.Helper()
	select {
	case got := <-runs:
		if got != want {
			t.Fatalf("ran %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not run", want)
	}
}

// The first round does not wait a whole interval: a coreapi restarted
// more often than its sweeps' interval would otherwise never sweep.
func TestEveryFirstRoundWithinStartBound(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := make(chan string)
	go sweep.EveryStartingWithin(ctx, time.Hour, 10*time.Millisecond, slog.New(slog.DiscardHandler), slog.LevelInfo, runsOf("first", runs, func() {}))
	next(t, runs, "first")
}

// A task that panics is logged with its stack; the tasks after it and
// the next rounds still run, and the process goes on.
func TestEveryTaskPanicLoggedNotFatal(t *testing.T) {
	var logs testkit.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	runs := make(chan string)
	done := make(chan error, 1)
	go func() {
		done <- sweep.Every(ctx, time.Millisecond, log, slog.LevelInfo,
			runsOf("broken", runs, func() { panic(`nil map write of "ada@example.com"`) }), runsOf("after", runs, func() {}))
	}()
	for range 2 {
		next(t, runs, "broken")
		next(t, runs, "after")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Every = %v", err)
	}
	out := logs.String()
	for _, want := range []string{`level=ERROR msg="sweep broken panicked" panic="nil map write of \"[redacted]\"" stack=`, "sweep_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// The panic's value is redacted as a request's is: it may quote a
	// row's values.
	if strings.Contains(out, "ada@example.com") {
		t.Errorf("the panic's quoted value reached the log:\n%s", out)
	}
}

// TestInBatchesOfStopsAtMost: a sweep over more rows than most statements
// of size take deletes that many and leaves the rest to the next sweep,
// which takes them and stops at the statement that deletes fewer.
func TestInBatchesOfStopsAtMost(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.New(t).Pool
	if _, err := pool.Exec(ctx, `CREATE TABLE swept (id int PRIMARY KEY); INSERT INTO swept SELECT generate_series(1, 10)`); err != nil {
		t.Fatal(err)
	}
	const q = `DELETE FROM swept WHERE id IN (SELECT id FROM swept ORDER BY id LIMIT $1)`
	left := func() int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM swept`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n, err := sweep.InBatchesOf(ctx, pool, 2, 3, q); err != nil || n != 6 || left() != 4 {
		t.Fatalf("first sweep: %d deleted, %v, %d left; want 6, 4 left", n, err, left())
	}
	if n, err := sweep.InBatchesOf(ctx, pool, 3, 3, q); err != nil || n != 4 || left() != 0 {
		t.Fatalf("second sweep: %d deleted, %v, %d left; want 4, none left", n, err, left())
	}
}
