package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/logging/logtest"
)

// TestFailureLogsBounded: while the database is down every request is
// answered 503, and each wrote a "database unavailable" warning and, at
// error level, its access line, so at LOG_LEVEL=warn a client's request
// rate was the log's line rate. Now those lines are at most
// FailureLogsPerSecond a second together, and the first of a later
// second is preceded by one counting those left out: the lines plus the
// counts account for every one. At LOG_LEVEL=info the access log keeps a
// line for every request. No request follows the burst: the count of its
// last second comes all the same, about a second after it (it waited for
// a later failure, which might never come once the database is back).
// At LOG_LEVEL=error the access lines (errors) let through were written
// but their count, a warning, was not: it is at error when it counts
// errors, and the warnings below the level are neither written nor
// counted.
func TestFailureLogsBounded(t *testing.T) {
	for _, tt := range []struct {
		level slog.Level
		// bounded: the messages whose lines the budget holds.
		bounded []string
	}{
		{slog.LevelError, []string{"request"}},
		{slog.LevelWarn, []string{"database unavailable", "request"}},
		{slog.LevelInfo, []string{"database unavailable"}},
	} {
		t.Run(tt.level.String(), func(t *testing.T) {
			logs := &testkit.LogBuffer{}
			e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
				o.Logger = slog.New(logging.NewHandler(logs, tt.level))
			}})
			tn := e.SeedTenant(t, "Failing")
			id := e.SeedUserIn(t, tn.ID, "failing@example.com", "member")
			databaseDown(t, e.DB)

			// tally reads the log: the bounded lines, the lines counted
			// as left out, and the access lines of a 503.
			tally := func() (lines, counted, access int, err error) {
				for _, line := range strings.Split(logs.String(), "\n") {
					var rec struct {
						Msg    string
						Status int
						Count  int
					}
					if json.Unmarshal([]byte(line), &rec) != nil {
						continue
					}
					switch {
					case rec.Msg == "request failures not logged":
						counted += rec.Count
					case rec.Msg == "request" && rec.Status == 503:
						access++
						if slices.Contains(tt.bounded, rec.Msg) {
							lines++
						}
					case rec.Msg == "database unavailable":
						if slices.Contains(tt.bounded, rec.Msg) {
							lines++
						} else if err == nil {
							err = fmt.Errorf("a %q line at %v", rec.Msg, tt.level)
						}
					}
				}
				return lines, counted, access, err
			}

			// Sent by several clients at once: a request refused by a
			// database that is down takes a connection attempt, and one
			// client alone may not reach the budget on a busy machine.
			// A machine so busy that a burst stays under the budget
			// every second sends another, up to eight.
			const n, clients = 400, 16
			begin := time.Now()
			sent := 0
			for range 8 {
				burst503(t, e, &id, n, clients)
				if t.Failed() {
					return
				}
				sent += n
				over := false
				for wait := time.Now().Add(1500 * time.Millisecond); !over && time.Now().Before(wait); {
					time.Sleep(100 * time.Millisecond)
					_, counted, _, _ := tally()
					over = counted > 0
				}
				if over {
					break
				}
			}
			seconds := int(time.Since(begin)/time.Second) + 2 // the seconds the bursts can have touched

			// The last second's count comes about a second after the
			// burst, with no request to take it.
			var lines, counted, access int
			want := sent * len(tt.bounded)
			eventually.Within(t, 3*time.Second, func() error {
				var err error
				lines, counted, access, err = tally()
				if err != nil {
					return err
				}
				if lines+counted != want {
					return fmt.Errorf("%d lines of %q + %d counted unlogged = %d, want every one of the %d", lines, tt.bounded, counted, lines+counted, want)
				}
				return nil
			})
			if most := httpapi.FailureLogsPerSecond * seconds; lines > most {
				t.Errorf("%d lines of %q over at most %d s, want at most %d a second (%d)", lines, tt.bounded, seconds, httpapi.FailureLogsPerSecond, most)
			}
			if counted == 0 {
				t.Errorf("no line of %q went unlogged: the budget did not apply", tt.bounded)
			}
			if tt.level == slog.LevelInfo && access != sent {
				t.Errorf("%d access lines of a 503 at info, want one for each of the %d requests", access, sent)
			}
		})
	}
}

// TestFailureLogsCountedAtShutdown: the count of the lines a burst left
// out waited for a timer about a second after it, which a coreapi
// stopping sooner wrote after its "stopped" line and the flush of its
// log's output, or never. Shutdown writes it before it returns, once,
// and nothing comes after.
func TestFailureLogsCountedAtShutdown(t *testing.T) {
	logs := &testkit.LogBuffer{}
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(logging.NewHandler(logs, slog.LevelWarn))
	}})
	tn := e.SeedTenant(t, "Failing")
	id := e.SeedUserIn(t, tn.ID, "failing@example.com", "member")
	databaseDown(t, e.DB)
	// Two lines a request, more than the budget, sent just after a
	// second begins: its count is pending when the server stops. On a
	// machine too busy to send them within that second, again.
	const n, clients = 96, 16
	sent := 0
	for range 5 {
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
		begin := time.Now()
		burst503(t, e, &id, n, clients)
		sent += n
		if t.Failed() || time.Now().Unix() == begin.Unix() {
			break
		}
	}
	if err := e.Server.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, counted := logtest.CountLines(logs.String(), "request failures not logged", "request", "database unavailable")
	if lines+counted != 2*sent || counted == 0 {
		t.Fatalf("when Shutdown returned: %d lines + %d counted unlogged, want every one of the %d, some counted", lines, counted, 2*sent)
	}
	at := logs.String()
	time.Sleep(1500 * time.Millisecond) // past a timer's second
	if after := logs.String(); after != at {
		t.Fatalf("written after Shutdown returned:\n%s", strings.TrimPrefix(after, at))
	}
}

// burst503 sends n requests of id from clients at once (n/clients each),
// each of which the database being down answers 503; a request otherwise
// answered fails the test.
func burst503(t *testing.T, e *apitest.Env, id *identity.Identity, n, clients int) {
	t.Helper()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range n / clients {
				if r := e.Get(t, id, "/api/v1/users/me"); r.Status != 503 {
					t.Errorf("database down: %d %s, want 503", r.Status, r.Body)
					return
				}
			}
		})
	}
	wg.Wait()
}

// databaseDown takes d's database away from every session but those of
// the test's admin connection until the test ends: its connections are
// ended and new ones refused, as while a primary is down.
func databaseDown(t *testing.T, d *dbtest.DB) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	name := pgx.Identifier{d.Name}.Sanitize()
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
			t.Errorf("database back: %v", err)
		}
		admin.Close(ctx)
	})
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, d.Name); err != nil {
		t.Fatal(err)
	}
}
