package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/valyala/fasthttp"
)

// reloadSettle is how long the watcher waits after a change before it
// reads the file: editors and ConfigMap updates write in several steps.
const reloadSettle = 100 * time.Millisecond

// ReloadRules reads RULES_FILE again and, if the whole file is valid,
// swaps the new route table in atomically; requests already routed keep
// the table they started with. A bad file keeps the current table, logs
// every problem and counts authproxy_rules_reload_failures_total; a good
// one bumps authproxy_rules_generation.
func (a *App) ReloadRules() error {
	if a.cfg.RulesFile == "" {
		a.log.Info("rules reload: no RULES_FILE, nothing to reload")
		return nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	b, err := os.ReadFile(a.cfg.RulesFile)
	if err == nil {
		a.lastRules = sha256.Sum256(b)
		var t *rules.Table
		if t, err = rules.Parse(b, Env(a.cfg)); err == nil {
			// A table that parses may still name what the proxy cannot
			// serve (an upstream without a key): refused the same way.
			if err = a.swap(t); err == nil {
				return nil
			}
		}
	}
	a.Metrics.RulesReloadFailed.Inc()
	for _, p := range problems(err) {
		a.log.Error("rules reload: problem", "file", a.cfg.RulesFile, "problem", p.Error())
	}
	a.log.Error("rules reload refused; the previous rules stay in force", "file", a.cfg.RulesFile)
	return fmt.Errorf("reload %s: %w", a.cfg.RulesFile, err)
}

func (a *App) swap(t *rules.Table) error {
	prev := a.Server.Router()
	r, err := a.newRouter(t, prev)
	if err != nil {
		return err
	}
	a.Server.SetRouter(r)
	a.Streams.Reroute(t)
	a.Metrics.RulesGeneration.Inc()
	// Clients no longer used keep serving the requests in flight; only
	// their idle connections go.
	kept := map[*fasthttp.HostClient]bool{}
	for _, c := range r.Clients {
		kept[c] = true
	}
	for _, c := range prev.Clients {
		if !kept[c] {
			c.CloseIdleConnections()
		}
	}
	a.log.Info("rules reloaded", "file", a.cfg.RulesFile, "upstreams", len(t.Upstreams), "routes", len(t.Routes()))
	return nil
}

// problems flattens joined errors so that each is logged on its own.
func problems(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, problems(e)...)
		}
		return out
	}
	return []error{err}
}

// watchRules reloads the rules file when it changes. It watches the file's
// directory, not the file: editors replace files by rename, and a
// Kubernetes ConfigMap volume swaps a "..data" symlink, neither of which a
// watch on the file itself would see. Only events naming the file or a
// ConfigMap's ".." entries count: another file in the directory written
// all the time (a log beside the rules) must not keep postponing the
// reload. A change whose content equals the last one read is ignored. The
// file is also checked once as soon as the watch is set, so that a change
// made while the proxy started is not missed.
func (a *App) watchRules(ctx context.Context, ready chan<- struct{}) {
	defer close(ready)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Error("rules watch: not watching; reload with SIGHUP", "err", err)
		return
	}
	defer w.Close()
	dir, base := filepath.Dir(a.cfg.RulesFile), filepath.Base(a.cfg.RulesFile)
	if err := w.Add(dir); err != nil {
		a.log.Error("rules watch: not watching; reload with SIGHUP", "dir", dir, "err", err)
		return
	}
	ready <- struct{}{}
	// A change made before the watch was set (between the first read of
	// the file and now) sent no event: check the file once right away.
	settle := time.After(0)
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.log.Warn("rules watch", "err", err)
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if name := filepath.Base(ev.Name); name == base || strings.HasPrefix(name, "..") {
				settle = time.After(reloadSettle)
			}
		case <-settle:
			settle = nil
			b, err := os.ReadFile(a.cfg.RulesFile)
			if err == nil {
				if sum := sha256.Sum256(b); bytes.Equal(sum[:], a.lastRulesSum()) {
					continue
				}
			}
			_ = a.ReloadRules() // logged and counted there
		}
	}
}

func (a *App) lastRulesSum() []byte {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	s := a.lastRules
	return s[:]
}
