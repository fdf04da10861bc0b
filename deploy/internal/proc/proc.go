// Package proc starts, watches and stops the child processes of the local
// stack runner (deploy/cmd/stack), the end-to-end suite (deploy/e2e) and
// the load harness (deploy/loadtest): one start/ready/stop for all three.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Child is one started process.
type Child struct {
	Name string
	Cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, valid after done
}

// Start starts cmd (configured by the caller: arguments, environment,
// output, process attributes) and reaps it in the background; onExit, if
// not nil, runs once it has exited (e.g. to close its log file), before
// Done is closed.
func Start(name string, cmd *exec.Cmd, onExit func()) (*Child, error) {
	if err := cmd.Start(); err != nil {
		if onExit != nil {
			onExit()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Name: name, Cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		if onExit != nil {
			onExit()
		}
		close(c.done)
	}()
	return c, nil
}

// Pid is the process id.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the process has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ExitErr waits for the exit and returns why: Wait's error, or "exit
// status 0" for a clean exit (which a service should not do by itself).
func (c *Child) ExitErr() error {
	<-c.done
	if c.err == nil {
		return errors.New("exit status 0")
	}
	return c.err
}

// Stop sends sig and waits up to timeout for the exit, then kills the
// process; the error says it had to be killed.
func (c *Child) Stop(sig os.Signal, timeout time.Duration) error {
	if c.Exited() {
		return nil
	}
	_ = c.Cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
		_ = c.Cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s (pid %d) did not exit within %s of %s; killed", c.Name, c.Pid(), timeout, sig)
	}
}

// Kill sends SIGKILL and reaps the process.
func (c *Child) Kill() {
	if c.Exited() {
		return
	}
	_ = c.Cmd.Process.Kill()
	<-c.done
}

var probe = &http.Client{Timeout: 2 * time.Second}

// WaitReady polls url until it answers 200; it fails when c (if not nil)
// exits first, ctx ends or timeout passes, saying what the last probe got.
func WaitReady(ctx context.Context, url string, timeout time.Duration, c *Child) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var done <-chan struct{}
	if c != nil {
		done = c.done
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("readiness request: %w", err)
		}
		resp, err := probe.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "status " + strconv.Itoa(resp.StatusCode)
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-done:
			return fmt.Errorf("exited before becoming ready: %w", c.ExitErr())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (%s): %w", url, timeout, last, ctx.Err())
		case <-tick.C:
		}
	}
}
