package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// silentDatabase is the URL of db behind a forward that, while down is
// set, accepts connections and never answers them.
func silentDatabase(t *testing.T, db *dbtest.DB, down *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = switchedForward(t, u.Host, down, true)
	return u.String()
}

// startSilent runs serve with h's hooks against dbURL and returns its
// admin address once it listens, failing unless that takes less than the
// start's database deadline and a margin.
func startSilent(t *testing.T, dbURL string, h hooks, out *testkit.LogBuffer) (admin string, done <-chan error, cancel func()) {
	t.Helper()
	env := serveEnv(t, dbURL)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- serveWith(ctx, nil, envOf(env), out, h) }()
	start := time.Now()
	_, admin = listening(t, out, errc)
	if d, bound := time.Since(start), startupDBTimeout+3*time.Second; d > bound {
		t.Fatalf("listening after %s with a database that does not answer, want at most %s\n%s", d, bound, out.String())
	}
	return admin, errc, cancel
}

func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeStartedWithSilentDatabase: serve starts within seconds while
// its database accepts connections and never answers (it waited for ever
// on the schema check): /healthz answers, /readyz does not, and no
// background work runs. Once the database answers, the start's checks are
// made, the background work starts (the permission catalog is recorded)
// and serve becomes ready.
func TestServeStartedWithSilentDatabase(t *testing.T) {
	db := dbtest.New(t)
	var down atomic.Bool
	down.Store(true)
	h, worked := backgroundWork()
	var out testkit.LogBuffer
	admin, done, cancel := startSilent(t, silentDatabase(t, db, &down), h, &out)

	if code, body := probe(t, "http://"+admin+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz = %d %s, want 200", code, body)
	}
	if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the database silent = %d %s, want 503", code, body)
	}
	if !strings.Contains(out.String(), "database not checked at start") {
		t.Errorf("no word of the database not checked in the log:\n%s", out.String())
	}
	select {
	case <-worked:
		t.Errorf("background work ran before the database was checked:\n%s", out.String())
	default:
	}

	down.Store(false)
	eventually.Within(t, 30*time.Second, func() error {
		select {
		case <-worked:
		default:
			return errors.New("no background work started")
		}
		if !strings.Contains(out.String(), `"msg":"permission catalog recorded"`) {
			return errors.New("the permission catalog is not recorded yet")
		}
		if code, body := probe(t, "http://"+admin+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestServeOldSchemaFoundOnceTheDatabaseAnswers: a serve started while
// its database did not answer stops, naming `coreapi migrate up`, once the
// database answers with a schema older than it needs, as it refuses to
// start on one; it never became ready and no background work ran.
func TestServeOldSchemaFoundOnceTheDatabaseAnswers(t *testing.T) {
	db := dbtest.New(t)
	if err := run(context.Background(), []string{"migrate", "down"}, envOf(map[string]string{"DATABASE_URL": db.URL}), &testkit.LogBuffer{}); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	var down atomic.Bool
	down.Store(true)
	h, worked := backgroundWork()
	var out testkit.LogBuffer
	admin, done, _ := startSilent(t, silentDatabase(t, db, &down), h, &out)
	if code, body := probe(t, "http://"+admin+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz = %d %s, want 200", code, body)
	}

	down.Store(false)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "coreapi migrate up") {
			t.Fatalf("serve on an old schema = %v, want a refusal naming `coreapi migrate up`\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve still running on an old schema\n%s", out.String())
	}
	select {
	case <-worked:
		t.Errorf("background work ran on the old schema:\n%s", out.String())
	default:
	}
}

// backgroundWork returns the hooks of a serve with a background worker,
// and a channel closed when it starts.
func backgroundWork() (hooks, <-chan struct{}) {
	started := make(chan struct{})
	return hooks{writer: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	}}, started
}

// TestWaitChecked: a database already checked lets a writer run even when
// the shutdown has begun too (a SIGTERM right at the start), so that a
// writer's last work is not skipped at random; one not checked waits, and
// gives up when the shutdown comes.
func TestWaitChecked(t *testing.T) {
	checked := make(chan struct{})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if waitChecked(ended, checked) {
		t.Error("not checked, shutting down: want false")
	}
	close(checked)
	for range 100 { // a select over both ready channels would pick at random
		if !waitChecked(ended, checked) {
			t.Fatal("checked, shutting down: want true")
		}
	}
}

// TestSIGHUPWhileStarting: a SIGHUP that comes while coreapi waits for its
// database at the start is a reload of the signing keys once their watch
// runs. It had the default action until the keys were wired, which ended
// the process (this test's with it).
func TestSIGHUPWhileStarting(t *testing.T) {
	db := dbtest.New(t)
	var down atomic.Bool
	down.Store(true)
	var out testkit.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(serveEnv(t, silentDatabase(t, db, &down))), &out) }()
	eventually.Within(t, 20*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"starting"`) {
			return errors.New("not starting yet")
		}
		return nil
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	eventually.Within(t, 30*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"reloading signing keys","signal":"hangup"`) {
			return errors.New("no reload logged for the SIGHUP")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
