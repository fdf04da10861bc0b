package sweep_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

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
