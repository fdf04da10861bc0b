package scalesim

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Core is a real coreapi process on a fresh, migrated database seeded with
// one tenant and its members.
type Core struct {
	Addr, AdminAddr string
	HMACKey         []byte
	TenantID        string
	Users           []string // member ids (role member: tenant:read)
	DBName          string
	Pool            *pgxpool.Pool // the simulation's own connections (application_name scalesim)

	adminURL string
	cmd      *exec.Cmd
	log      *os.File
}

// CoreConfig says how to start coreapi.
type CoreConfig struct {
	Bin      string   // the coreapi program (built by make bench-scale)
	AdminURL string   // PostgreSQL URL of a database to create the run's database from
	Dir      string   // work directory (keys, logs)
	NATSURL  string   // for coreapi's outbox relay
	Users    int      // members to seed
	Env      []string // extra environment (DB_MAX_CONNS=..., PROJECTION_MAX_INFLIGHT=...)
}

// StartCore creates the database, migrates it with `coreapi migrate`,
// generates signing keys, seeds the members and starts `coreapi serve`.
func StartCore(ctx context.Context, cfg CoreConfig) (_ *Core, err error) {
	c := &Core{adminURL: cfg.AdminURL, DBName: "scalesim_" + randHex(6)}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	admin, err := pgx.Connect(ctx, cfg.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL (run through `make bench-scale`, or set DATABASE_URL): %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.DBName}.Sanitize())
	_ = admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(cfg.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	u.Path = "/" + c.DBName
	dbURL := u.String()
	mig := exec.CommandContext(ctx, cfg.Bin, "migrate", "up")
	mig.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	if out, err := mig.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("coreapi migrate up: %w: %s", err, out)
	}
	keys := filepath.Join(cfg.Dir, "keys-"+c.DBName)
	if out, err := exec.CommandContext(ctx, cfg.Bin, "keys", "generate", "-dir", keys).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("coreapi keys generate: %w: %s", err, out)
	}
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "scalesim"
	pc.MaxConns = 4
	if c.Pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, err
	}
	if err := c.seed(ctx, cfg.Users); err != nil {
		return nil, err
	}

	c.HMACKey = make([]byte, 32)
	_, _ = rand.Read(c.HMACKey)
	c.Addr, c.AdminAddr = "127.0.0.1:"+strconv.Itoa(freePort()), "127.0.0.1:"+strconv.Itoa(freePort())
	if c.log, err = os.Create(filepath.Join(cfg.Dir, "coreapi-"+c.DBName+".log")); err != nil {
		return nil, err
	}
	c.cmd = exec.Command(cfg.Bin, "serve")
	c.cmd.Env = append(append(os.Environ(),
		"COREAPI_LISTEN_ADDR="+c.Addr, "COREAPI_ADMIN_ADDR="+c.AdminAddr, "DATABASE_URL="+dbURL,
		"IDENTITY_HMAC_KEY="+base64.StdEncoding.EncodeToString(c.HMACKey), "NATS_URL="+cfg.NATSURL,
		"SIGNING_KEYS_DIR="+keys, "SIGNING_KEY_ACTIVATION_DELAY=0s", "LOG_LEVEL=warn",
		// No mail server (not one of the environment's either).
		"SMTP_URL=", "MAIL_TO_LOG=true"), cfg.Env...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start coreapi: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.AdminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("coreapi not ready after 30 s; see %s", c.log.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c, nil
}

// seed inserts one tenant with a member role and n members.
func (c *Core) seed(ctx context.Context, n int) error {
	const q = `
WITH t AS (
    INSERT INTO tenants (name) VALUES ('Scale Inc') RETURNING id
), r AS (
    INSERT INTO roles (tenant_id, name, permissions, builtin)
    SELECT id, 'member', '{tenant:read}', true FROM t RETURNING id, tenant_id
), u AS (
    INSERT INTO users (email, display_name)
    SELECT 'scale-' || g || '-' || $2 || '@example.com', 'Scale ' || g FROM generate_series(1, $1) g
    RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT t.id, u.id FROM t, u RETURNING tenant_id, user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT m.tenant_id, m.user_id, r.id FROM m, r
RETURNING user_id::text, tenant_id::text`
	rows, err := c.Pool.Query(ctx, q, n, randHex(4))
	if err != nil {
		return fmt.Errorf("seed members: %w", err)
	}
	type row struct{ User, Tenant string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return fmt.Errorf("seed members: %w", err)
	}
	if len(got) != n {
		return fmt.Errorf("seed members: %d rows, want %d", len(got), n)
	}
	for _, r := range got {
		c.Users = append(c.Users, r.User)
		c.TenantID = r.Tenant
	}
	return nil
}

// Pid is coreapi's process id.
func (c *Core) Pid() int { return c.cmd.Process.Pid }

// Metrics returns coreapi's /metrics text.
func (c *Core) Metrics() (string, error) {
	resp, err := http.Get("http://" + c.AdminAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return string(b), err
}

// PostgresCPU is the CPU time used so far by the database's backends
// serving coreapi (every backend of the database except the simulation's
// own), read from /proc; pids are the backends it found.
func (c *Core) PostgresCPU(ctx context.Context) (time.Duration, []int, error) {
	rows, err := c.Pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name <> 'scalesim'`)
	if err != nil {
		return 0, nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, nil, err
	}
	var sum time.Duration
	var out []int
	for _, p := range pids {
		d, err := ProcessCPU(int(p))
		if err != nil {
			continue // the backend ended meanwhile
		}
		sum += d
		out = append(out, int(p))
	}
	return sum, out, nil
}

// Connections is the number of backends serving coreapi right now.
func (c *Core) Connections(ctx context.Context) (int, error) {
	var n int
	err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name <> 'scalesim'`).Scan(&n)
	return n, err
}

// Stop ends coreapi and drops the database.
func (c *Core) Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	if c.log != nil {
		_ = c.log.Close()
	}
	if c.Pool != nil {
		c.Pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if admin, err := pgx.Connect(ctx, c.adminURL); err == nil {
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{c.DBName}.Sanitize()+" WITH (FORCE)")
		_ = admin.Close(ctx)
	}
}

// metricSum adds up the samples of metric name (exactly, no suffix) whose
// labels contain every one of labels (each like `status="503"`), in a
// Prometheus text exposition.
func metricSum(text, name string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		lbl := ""
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			lbl, rest = rest[1:end], rest[end+1:]
		}
		match := true
		for _, l := range labels {
			match = match && slices.Contains(strings.Split(lbl, ","), l)
		}
		if !match {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
