package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// switchedForward listens on a local port and, while down is set, closes
// every connection at once (a database that refuses), or with silent holds
// it open unanswered until the test ends (one that does not answer at
// all: a partition, a failover to a stale address); otherwise it relays
// them to target.
func switchedForward(t *testing.T, target string, down *atomic.Bool, silent bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			if down.Load() {
				if silent {
					t.Cleanup(func() { a.Close() })
				} else {
					a.Close()
				}
				continue
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			t.Cleanup(func() { a.Close(); b.Close() })
			go func() { _, _ = io.Copy(a, b); a.Close() }()
			go func() { _, _ = io.Copy(b, a); b.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestServeStartedWithoutDatabase: serve starts while the database does
// not answer. It cannot look up when the fleet first found its signing
// keys, so it says so and is not ready; once the database answers, it
// looks them up (asked again every second, not at the 30 s poll) and
// becomes ready.
func TestServeStartedWithoutDatabase(t *testing.T) {
	db := dbtest.New(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	u.Host = switchedForward(t, u.Host, &down, false)
	env := serveEnv(t, u.String())
	var out testkit.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()

	var admin string
	eventually.Within(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		default:
		}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var l struct {
				Msg       string `json:"msg"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				admin = l.AdminAddr
				return nil
			}
		}
		return errors.New("no listening line in the log")
	})
	if !strings.Contains(out.String(), "first sightings not looked up") {
		t.Fatalf("no word of the sightings not looked up in the log:\n%s", out.String())
	}
	ready := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the database down = %d %s, want 503", code, body)
	}

	down.Store(false)
	eventually.Within(t, 20*time.Second, func() error {
		if !strings.Contains(out.String(), "signing keys: first sightings looked up") {
			return errors.New("sightings not looked up yet")
		}
		if code, body := ready(); code != http.StatusOK {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
