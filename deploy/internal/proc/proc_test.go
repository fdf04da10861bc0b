package proc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestStopSignalsThenKills(t *testing.T) {
	closed := false
	c, err := Start("sleep", exec.Command("sleep", "30"), func() { closed = true })
	if err != nil {
		t.Fatal(err)
	}
	if c.Exited() {
		t.Fatal("exited at once")
	}
	if err := c.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !c.Exited() || !closed {
		t.Fatalf("after Stop: exited %v, onExit ran %v", c.Exited(), closed)
	}
	if err := c.ExitErr(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("exit error = %v, want the signal", err)
	}

	// A process that ignores the signal is killed after the timeout.
	c, err = Start("stubborn", exec.Command("sh", "-c", "trap '' TERM; sleep 30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let sh install the trap
	if err := c.Stop(syscall.SIGTERM, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("stop of a stubborn child = %v, want killed", err)
	}
}

func TestStartFailure(t *testing.T) {
	ran := false
	if _, err := Start("missing", exec.Command("/nonexistent/binary"), func() { ran = true }); err == nil || !ran {
		t.Fatalf("start of a missing binary: err %v, onExit ran %v", err, ran)
	}
}

func TestWaitReady(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	time.AfterFunc(200*time.Millisecond, func() { ready.Store(true) })
	if err := WaitReady(context.Background(), srv.URL, 10*time.Second, nil); err != nil {
		t.Fatalf("ready: %v", err)
	}

	// Never ready: the error names the last answer.
	ready.Store(false)
	err := WaitReady(context.Background(), srv.URL, 300*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("not ready = %v, want the last status", err)
	}

	// A child that exits first ends the wait with its exit.
	c, err := Start("false", exec.Command("false"), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = WaitReady(context.Background(), srv.URL, 10*time.Second, c)
	if err == nil || !strings.Contains(err.Error(), "exited before becoming ready") {
		t.Fatalf("exited child = %v", err)
	}
}
