package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopsOnSignal runs the runner's main in a child process (this test
// binary), busy waiting for an unreachable database, and sends it each
// signal that ends `make run`: Ctrl-C, SIGTERM and SIGHUP (a closed
// terminal). Each must end the run the orderly way ("interrupted", exit 0);
// SIGHUP killed the runner outright, with no service stopped in order.
func TestStopsOnSignal(t *testing.T) {
	if os.Getenv("STACK_SIGNAL_TEST_MAIN") == "1" {
		// A record of make run's database: reset asks the server for it.
		os.Args = []string{"stack", "-reset", "-ready-timeout", "60s", "-data", os.Getenv("STACK_SIGNAL_TEST_DATA")}
		main()
		return
	}
	if runtime.GOOS == "windows" {
		t.Skip("no POSIX signals")
	}
	data := t.TempDir()
	writeRecord(t, data, usedDB{Database: "tollgate", ServerID: "1", Created: true})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestStopsOnSignal$")
			cmd.Env = append(os.Environ(), "STACK_SIGNAL_TEST_MAIN=1", "STACK_SIGNAL_TEST_DATA="+data,
				// Nothing listens on port 1: the runner retries until the signal.
				"DATABASE_URL=postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("after %v the runner ended with %v, not in order:\n%s", sig, err, out.String())
				} else if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("the runner did not stop after %v:\n%s", sig, out.String())
			}
			if !strings.Contains(out.String(), `"msg":"interrupted"`) {
				t.Errorf("after %v the runner did not log that it was interrupted:\n%s", sig, out.String())
			}
		})
	}
}
