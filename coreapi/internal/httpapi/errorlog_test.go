package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// TestRequestFailedLogsNoRowValues: a request failed by a statement was
// logged with the driver's error as it was, and PostgreSQL's and pgx's
// errors quote the values of the statement (an address that is not a
// UUID), so a 500 wrote a person's address to the log. The `request failed` line now writes the
// error without the values, and what an operator needs beside it: the
// SQLSTATE, the constraint, table and column the server named, and the
// route.
func TestRequestFailedLogsNoRowValues(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogBuffer{}
	var pool *pgxpool.Pool
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(o *httpapi.Options) {
		o.Logger = slog.New(logging.NewHandler(logs, slog.LevelInfo))
		pool = o.Pool
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			rt.Public.Post("/x/duplicate/:n", func(c *fiber.Ctx) error {
				const q = `INSERT INTO users (email) VALUES ($1)`
				if _, err := pool.Exec(c.UserContext(), q, "Duplicate.Address@example.com"); err != nil {
					return fmt.Errorf("add user: %w", err)
				}
				return nil
			})
			rt.Public.Get("/x/cast", func(c *fiber.Ctx) error {
				var id string
				err := pool.QueryRow(c.UserContext(), `SELECT $1::text::uuid::text`, "cast.address@example.com").Scan(&id)
				return fmt.Errorf("find user: %w", err)
			})
			rt.Public.Patch("/x/check", func(c *fiber.Ctx) error {
				const q = `INSERT INTO users (email, display_name) VALUES ($1, repeat('x', 201))`
				_, err := pool.Exec(c.UserContext(), q, "check.address@example.com")
				return fmt.Errorf("add user: %w", err)
			})
		})
	}})
	if _, err := e.DB.Pool.Exec(context.Background(), `INSERT INTO users (email) VALUES ('duplicate.address@example.com')`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, method, path, route, address string
		want                               map[string]string
	}{
		{"unique violation", "POST", "/api/v1/x/duplicate/1", "/api/v1/x/duplicate/:n", "duplicate.address",
			map[string]string{"sqlstate": "23505", "constraint": "users_email_lower_key", "table": "users"}},
		{"value in the message", "GET", "/api/v1/x/cast", "/api/v1/x/cast", "cast.address",
			map[string]string{"sqlstate": "22P02"}},
		// The server's DETAIL holds the row: "Failing row contains (...)".
		{"check violation", "PATCH", "/api/v1/x/check", "/api/v1/x/check", "check.address",
			map[string]string{"sqlstate": "23514", "constraint": "users_display_name_check", "table": "users"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := "errlog-" + strings.ReplaceAll(tt.name, " ", "-")
			r := e.Do(t, apitest.Request{Method: tt.method, Path: tt.path, Undocumented: true,
				Header: http.Header{"X-Request-Id": {rid}}})
			apitest.WantProblem(t, r, 500, "internal")
			var line map[string]any
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(strings.ToLower(l), tt.address) {
					t.Errorf("the statement's value was logged: %s", l)
				}
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "request failed" && rec["request_id"] == rid {
					line = rec
				}
			}
			if line == nil {
				t.Fatalf("no request failed line for %s:\n%s", rid, logs)
			}
			if s, _ := line["err"].(string); s == "" {
				t.Errorf("request failed line without its err: %v", line)
			}
			if line["route"] != tt.route {
				t.Errorf("route = %v, want %q", line["route"], tt.route)
			}
			for k, v := range tt.want {
				if line[k] != v {
					t.Errorf("%s = %v, want %q (line %v)", k, line[k], v, line)
				}
			}
		})
	}
}
