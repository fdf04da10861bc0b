// Command notes runs the example notes service (package notes) behind
// authproxy. Configuration comes from the environment:
//
//	NOTES_LISTEN_ADDR            127.0.0.1:8082   where the proxy reaches it (keep it on loopback)
//	NOTES_ADMIN_ADDR             (off)            /healthz and /readyz, e.g. 127.0.0.1:9092
//	TOLLGATE_IDENTITY_KEYS       required*        the key list "id:base64[,id:base64...]" of this upstream
//	TOLLGATE_IDENTITY_KEYS_FILE  required*        or a file holding it (* one of the two)
//	LOG_LEVEL                    info             debug logs every rejected signature
//	SHUTDOWN_TIMEOUT             10s              drain time on SIGTERM
//	NOTES_REPLAY_CACHE_SIZE      1048576          signatures remembered to refuse replays (16 bytes each,
//	                                              256 to 1073741824; about 5 × requests a second × 30);
//	                                              "off" accepts replays (load
//	                                              tests that resend pre-signed requests)
//
// `notes -check-config` validates the configuration and exits; `notes --version`
// prints the version, commit and Go version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-auth/tollgate/deploy/examples/notes"
	"github.com/tollgate-auth/tollgate/shared/adminhttp"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if buildinfo.Requested(os.Args[1:]) {
		_ = buildinfo.Print(os.Stdout, "notes")
		return
	}
	check := flag.Bool("check-config", false, "validate the configuration and exit")
	flag.Bool("version", false, "print the version, commit and Go version, and exit")
	flag.Parse()
	if err := run(ctx, os.Getenv, *check, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "notes:", err)
		stop()
		os.Exit(1)
	}
}

type config struct {
	listen, admin string
	keys          []identity.Key
	level         slog.Level
	shutdown      time.Duration
	replays       int  // verify.Config.ReplayCacheSize
	allowReplays  bool // NOTES_REPLAY_CACHE_SIZE=off
}

// loadConfig reads the environment and reports every problem at once.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{listen: "127.0.0.1:8082", admin: getenv("NOTES_ADMIN_ADDR"), shutdown: 10 * time.Second, replays: replay.DefaultSize}
	var errs []error
	if v := getenv("NOTES_LISTEN_ADDR"); v != "" {
		c.listen = v
	}
	for name, addr := range map[string]string{"NOTES_LISTEN_ADDR": c.listen, "NOTES_ADMIN_ADDR": c.admin} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	keys, err := verify.KeysFromEnv(getenv)
	if err != nil {
		errs = append(errs, err)
	}
	c.keys = keys
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := c.level.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("LOG_LEVEL: %w", err))
		}
	}
	if v := getenv("SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT: want a positive duration, got %q", v))
		}
		c.shutdown = d
	}
	if v := getenv("NOTES_REPLAY_CACHE_SIZE"); v == "off" {
		c.allowReplays = true
	} else if v != "" {
		// Above the bound, verify.New refuses it: the memory is allocated
		// at start, and -check-config must say so.
		n, err := strconv.Atoi(v)
		if err != nil || n < 256 || n > verify.MaxReplayCacheSize {
			errs = append(errs, fmt.Errorf(`NOTES_REPLAY_CACHE_SIZE: want a number from 256 to %d, or "off", got %q`, verify.MaxReplayCacheSize, v))
		}
		c.replays = n
	}
	return c, errors.Join(errs...)
}

// run serves until ctx ends, then drains. ready, when not nil, receives the
// bound API address once the service accepts connections.
func run(ctx context.Context, getenv func(string) string, checkOnly bool, logw io.Writer, ready chan<- string) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if checkOnly {
		return nil
	}
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: cfg.level})).With("component", "notes")
	v, err := verify.New(verify.Config{Keys: cfg.keys, MaxBodyBytes: notes.MaxBodyBytes, Logger: log,
		ReplayCacheSize: cfg.replays, AllowReplays: cfg.allowReplays})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           notes.Handler(v, notes.NewStore(), nil),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if cfg.admin != "" {
		aln, err := net.Listen("tcp", cfg.admin)
		if err != nil {
			_ = srv.Close()
			return err
		}
		admin := http.NewServeMux()
		ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }
		admin.HandleFunc("GET /healthz", ok)
		admin.HandleFunc("GET /readyz", ok)
		asrv := adminhttp.Server(admin)
		servers = append(servers, asrv)
		go func() { errc <- asrv.Serve(aln) }()
		log.Info("admin listening", "addr", aln.Addr().String())
	}
	keyIDs := make([]string, len(cfg.keys))
	for i, k := range cfg.keys {
		keyIDs[i] = k.ID
	}
	log.Info("listening", "addr", ln.Addr().String(), "key_ids", strings.Join(keyIDs, ","))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
	defer cancel()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Shutdown(sctx))
	}
	log.Info("stopped")
	return errors.Join(errs...)
}
