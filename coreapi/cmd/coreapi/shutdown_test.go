package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestShutdownPublishesWritesOfTheDrain: a change committed while the
// server drains its last requests after SIGTERM is published by this
// replica's outbox relay before serve returns. (A request is held in
// flight, its body half sent, so that the drain lasts; the change is
// written beside it, as the request's own transaction would.)
func TestShutdownPublishesWritesOfTheDrain(t *testing.T) {
	db := dbtest.New(t)
	ns := natstest.Start(t, -1, "")
	got := make(chan *nats.Msg, 16)
	sub := natstest.Connect(t, ns.ClientURL())
	if _, err := sub.ChanSubscribe(invalidation.SubjectWildcard, got); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	env := serveEnv(t, db.URL)
	env["NATS_URL"] = ns.ClientURL()
	env["SHUTDOWN_TIMEOUT"] = "15s"
	var out testkit.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	addr, admin := listening(t, &out, done)
	eventually.Within(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"nats connected"`) {
			return errors.New("the relay is not connected to NATS yet")
		}
		return nil
	})
	// The writes of serve's start (the permission catalog's invalidation,
	// the signing keys' announcement) are committed and published first:
	// a COMMIT of theirs cancelled as the workers stop, which the
	// database then completes, can land after the relay's last flush.
	// Only the writes of the drain are checked here (the workers' own:
	// TestShutdownStopsTheWritersBeforeTheRelay).
	eventually.Within(t, 20*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"permission catalog recorded"`) {
			return errors.New("the permission catalog is not recorded yet")
		}
		var keys, pending int
		if err := db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FILTER (WHERE subject = $1), count(*) FILTER (WHERE published_at IS NULL) FROM outbox`,
			invalidation.SubjectKeysChanged).Scan(&keys, &pending); err != nil {
			return err
		}
		if keys == 0 || pending != 0 {
			return fmt.Errorf("start's writes: %d keys announcements, %d rows pending", keys, pending)
		}
		return nil
	})

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const body = `{"scope":"local"}`
	if _, err := fmt.Fprintf(conn, "POST /api/v1/auth/logout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body[:1]); err != nil {
		t.Fatal(err)
	}
	// The server's accept loop must take the connection before the
	// listener closes, and nothing shows when it has: a pause. Had it not,
	// serve would return at once, which the check below reports.
	time.Sleep(50 * time.Millisecond)
	cancel() // SIGTERM
	eventually.Within(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz = %d, want 503 once shutting down", resp.StatusCode)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("serve returned with a request in flight: %v", err)
	default:
	}
	subject := invalidation.UserSubject("drained-user")
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return outbox.Write(context.Background(), tx, outbox.Row{Subject: subject, Reason: invalidation.ReasonUserLogoutGlobal})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(body[1:])); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("serve = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after the drain")
	}
	var pending int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d outbox rows left pending when serve returned, want 0\n%s", pending, out.String())
	}
	for {
		select {
		case m := <-got:
			if m.Subject == subject {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s published", subject)
		}
	}
}

// TestShutdownStopsTheWritersBeforeTheRelay: a background worker that
// commits an outbox row as it stops (a sweep's last pass) has it published
// by this replica's relay before serve returns: the relay's last flush
// comes after every other writer has returned. The worker commits as late
// as the shutdown lets it: once the relay has stopped, or once serve waits
// for the writers with the relay still running.
func TestShutdownStopsTheWritersBeforeTheRelay(t *testing.T) {
	db := dbtest.New(t)
	ns := natstest.Start(t, -1, "")
	subject := invalidation.UserSubject("swept-user")
	got := make(chan *nats.Msg, 16)
	sub := natstest.Connect(t, ns.ClientURL())
	if _, err := sub.ChanSubscribe(subject, got); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	relayStopped, writersStopping := make(chan struct{}), make(chan struct{})
	committed := make(chan error, 1)
	h := hooks{
		writer: func(ctx context.Context) error {
			<-ctx.Done()
			select {
			case <-relayStopped:
			case <-writersStopping:
			}
			committed <- pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
				return outbox.Write(context.Background(), tx, outbox.Row{Subject: subject, Reason: invalidation.ReasonUserLogoutGlobal})
			})
			return nil
		},
		step: func(step string) {
			switch step {
			case "relay stopped":
				close(relayStopped)
			case "writers stopping":
				close(writersStopping)
			}
		},
	}
	env := serveEnv(t, db.URL)
	env["NATS_URL"] = ns.ClientURL()
	var out testkit.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveWith(ctx, nil, envOf(env), &out, h) }()
	listening(t, &out, done)
	eventually.Within(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"nats connected"`) {
			return errors.New("the relay is not connected to NATS yet")
		}
		return nil
	})
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("serve = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not return; its log:\n%s", out.String())
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	var pending int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE subject = $1 AND published_at IS NULL`,
		subject).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Fatalf("the row a worker committed as it stopped was left pending when serve returned\n%s", out.String())
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s published", subject)
	}
}

// listening waits for serve's "listening" line and returns its public and
// admin addresses; done is serve's result, which must not come first.
func listening(t *testing.T, out *testkit.LogBuffer, done <-chan error) (addr, admin string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var l struct {
				Msg       string `json:"msg"`
				Addr      string `json:"addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				return l.Addr, l.AdminAddr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line in the log:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
