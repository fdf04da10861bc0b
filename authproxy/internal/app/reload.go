package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
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

// inPlaceSettle is how long a file written in place (not renamed over)
// must stay the same, between two reads, before it is loaded. Such a file
// is read while it is written: cut short within its list of routes it is
// valid YAML, a table that may lack a route's permissions, and nothing in
// it tells it from a shorter file. A writer that pauses for longer than
// this within the file still gets its part loaded; one that renames a
// complete file over the old one never does.
const inPlaceSettle = time.Second

// ReloadRules reads RULES_FILE again and, if the whole file is valid,
// swaps the new route table in atomically; requests already routed keep
// the table they started with. A bad file keeps the current table, logs
// every problem, counts authproxy_rules_reload_failures_total and sets
// authproxy_rules_reload_refused (an alert holds on it for as long as the
// file stays refused); a good one bumps authproxy_rules_generation and
// clears authproxy_rules_reload_refused. It reads the file at once (SIGHUP
// is an operator's explicit request), however it was written.
func (a *App) ReloadRules() error {
	if a.cfg.RulesFile == "" {
		a.log.Info("rules reload: no RULES_FILE, nothing to reload")
		return nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	b, err := rules.ReadFile(a.cfg.RulesFile)
	return a.load(b, err)
}

// reloadContent is ReloadRules with content the watcher read (b, or the
// error reading it).
func (a *App) reloadContent(b []byte, readErr error) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.load(b, readErr)
}

// load swaps in the table b holds, or refuses it; reloadMu is held.
func (a *App) load(b []byte, err error) error {
	if err != nil {
		// No content was read: whatever comes back next is a change, the
		// content in force included (a file removed, or made unreadable,
		// and restored as it was), which must clear the refusal.
		a.lastRules = [32]byte{}
	} else {
		a.lastRules = sha256.Sum256(b)
		var t *rules.Table
		if t, err = rules.Parse(b, Env(a.cfg)); err == nil {
			// A table that parses may still name what the proxy cannot
			// serve (an upstream without a key): refused the same way.
			if err = a.swap(t); err == nil {
				for _, w := range t.Warnings {
					a.log.Warn("rules: warning", "file", a.cfg.RulesFile, "warning", w)
				}
				a.Metrics.RulesReloadRefused.Set(0)
				return nil
			}
		}
	}
	a.Metrics.RulesReloadFailed.Inc()
	a.Metrics.RulesReloadRefused.Set(1)
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

// watchRules reloads the rules file when it changes. It watches
// directories, not the file: editors replace files by rename, and a
// Kubernetes ConfigMap volume swaps a "..data" symlink, neither of which a
// watch on the file itself would see. The directories are those holding
// each entry the file's path is resolved through (see watchPoints): the
// file's own, and that of every symlink on the way (a ConfigMap's "..data",
// the directory link of a ConfigMap key mounted under a directory, a
// "current" link a deploy switches). They are worked out again before each
// read, so that a watch on a directory that was deleted or replaced (a
// ConfigMap's previous version, a renamed directory) moves to the one now
// in its place. Only events naming those entries, or a watched directory
// itself, count: another file in the directory written all the time (a log
// beside the rules) must not keep postponing the reload. A change whose
// content equals the last one read is ignored. The file is also checked
// once as soon as the watch is set, so that a change made while the proxy
// started is not missed.
//
// A file replaced (an entry on the way created, renamed or removed, and
// the file not written since) is read reloadSettle after the last change.
// A file written in place (see changeKind) is loaded only once two reads
// inPlaceSettle apart, with no change seen in between, found the same
// bytes, size, modification time and file: a change restarts the wait.
// Each such reload logs a warning and counts
// authproxy_rules_reload_in_place_total.
func (a *App) watchRules(ctx context.Context, ready chan<- struct{}) {
	defer close(ready)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Error("rules watch: not watching; reload with SIGHUP", "err", err)
		return
	}
	defer w.Close()
	watched := map[string]bool{}
	// watch sets the watches for the file's path as it resolves now and
	// returns the entries whose events count.
	watch := func() map[string]bool {
		dirs, names := watchPoints(a.cfg.RulesFile)
		for d := range watched {
			if !dirs[d] {
				_ = w.Remove(d) // gone already if the directory was
				delete(watched, d)
			}
		}
		for d := range dirs {
			// Added again even when watched: a directory replaced under
			// the same path is another one.
			if err := w.Add(d); err != nil {
				a.log.Warn("rules watch: cannot watch", "dir", d, "err", err)
				continue
			}
			watched[d] = true
		}
		return names
	}
	names := watch()
	if len(watched) == 0 {
		a.log.Error("rules watch: not watching; reload with SIGHUP", "file", a.cfg.RulesFile)
		return
	}
	var (
		events <-chan fsnotify.Event = w.Events
		errs   <-chan error          = w.Errors
	)
	if a.rulesWatchEvents != nil {
		events, errs = a.rulesWatchEvents(events, errs)
	}
	ready <- struct{}{}
	var (
		// A change made before the watch was set (between the first read
		// of the file and now) sent no event: check the file once right
		// away.
		settle = time.After(0)
		// kind is what the events since the last read say of the change.
		kind changeKind
		// held is the content of a file written in place as first read,
		// waiting to be read again inPlaceSettle later; nil when a change
		// came since.
		held *rulesRead
		// last is the file as last read (nil: unknown).
		last = a.rulesInfo
	)
	changed := func(k changeKind) {
		if k != changeUnknown {
			kind = k
		} else if kind == changeNone {
			kind = changeUnknown
		}
		held = nil
		settle = time.After(reloadSettle)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-errs:
			if !ok {
				return
			}
			// The kernel's queue of events overflowed: those dropped may
			// have been the file's change, and none comes again until the
			// next one. Read the file again (unchanged, it is not
			// reloaded); what the events would have said is unknown.
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				a.log.Warn("rules watch: events were lost; reading the rules file again", "file", a.cfg.RulesFile, "err", err)
				kind = changeUnknown
				changed(changeUnknown)
				continue
			}
			a.log.Warn("rules watch", "err", err)
		case ev, ok := <-events:
			if !ok {
				return
			}
			if name := filepath.Clean(ev.Name); names[name] || watched[name] {
				changed(eventKind(ev))
			}
		case <-settle:
			settle = nil
			// The watches first, then the read: a change after the read
			// is seen by the new watches.
			names = watch()
			r := readRules(a.cfg.RulesFile)
			if a.rulesReadDone != nil {
				a.rulesReadDone()
			}
			k := kind
			if k == changeNone || k == changeUnknown {
				// No event says how (the first check, lost events, a
				// chmod): a file other than the one last read was
				// replaced; the same file, written in place.
				k = changeReplaced
				if r.err == nil && last != nil && os.SameFile(last, r.info) {
					k = changeInPlace
				}
			}
			if r.err == nil {
				last = r.info
				if bytes.Equal(r.sum[:], a.lastRulesSum()) {
					kind, held = changeNone, nil
					continue
				}
			}
			if k == changeInPlace && r.err == nil {
				if held == nil || !held.same(r) {
					// First read, or changed since without an event: wait
					// for it to stay the same.
					held = &r
					settle = time.After(inPlaceSettle)
					continue
				}
				a.Metrics.RulesReloadInPlace.Inc()
				a.log.Warn("rules file written in place; it was read only once unchanged for "+inPlaceSettle.String()+
					", and a pause longer than that while writing it loads it cut short: write a temporary file and rename it over the rules file (as a Kubernetes ConfigMap update does)",
					"file", a.cfg.RulesFile)
			}
			kind, held = changeNone, nil
			_ = a.reloadContent(r.b, r.err) // logged and counted there
		}
	}
}

// changeKind is what the watcher's events say of a change to the rules
// file.
type changeKind int

const (
	changeNone changeKind = iota
	// changeUnknown: something changed, the events do not say how (a
	// chmod alone, events lost); the file's identity decides.
	changeUnknown
	// changeReplaced: an entry on the way was created, renamed or
	// removed (a file or a "..data" symlink renamed over, a directory
	// moved), and the file was not written since: its content was
	// complete when it took its place.
	changeReplaced
	// changeInPlace: the file was written at its name (truncated and
	// written, appended to, created and then written), and may be read
	// half written.
	changeInPlace
)

// eventKind tells what ev says of the change; the last event decides (a
// file renamed over is replaced, even if it was written in place before;
// one created and then written is written in place).
func eventKind(ev fsnotify.Event) changeKind {
	switch {
	case ev.Has(fsnotify.Create), ev.Has(fsnotify.Rename), ev.Has(fsnotify.Remove):
		return changeReplaced
	case ev.Has(fsnotify.Write):
		return changeInPlace
	}
	return changeUnknown
}

// rulesRead is one read of the rules file: its content, or the error
// reading it, and the file as it stood once read.
type rulesRead struct {
	b    []byte
	sum  [32]byte
	info os.FileInfo
	err  error
}

func readRules(path string) rulesRead {
	var r rulesRead
	if r.b, r.err = rules.ReadFile(path); r.err != nil {
		return r
	}
	r.sum = sha256.Sum256(r.b)
	// After the read: a write during it changes the time.
	if r.info, r.err = os.Stat(path); r.err != nil {
		r.b = nil
	}
	return r
}

// same reports whether r and s read the same content from the same file,
// untouched (size, modification time) in between.
func (r *rulesRead) same(s rulesRead) bool {
	return r.err == nil && s.err == nil && r.sum == s.sum && os.SameFile(r.info, s.info) &&
		r.info.Size() == s.info.Size() && r.info.ModTime().Equal(s.info.ModTime())
}

// maxLinks bounds the symlinks followed in resolving a path (a loop).
const maxLinks = 40

// watchPoints resolves path as opening it would, symlink by symlink, and
// returns the entries it goes through whose change changes what it
// reads — each symlink on the way and the file itself, or the first
// entry missing — and the directories holding them.
func watchPoints(path string) (dirs, names map[string]bool) {
	dirs, names = map[string]bool{}, map[string]bool{}
	abs, err := filepath.Abs(path)
	if err != nil {
		return dirs, names
	}
	root := filepath.VolumeName(abs) + string(filepath.Separator)
	dir, rest := root, strings.Split(abs[len(root):], string(filepath.Separator))
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			dir = filepath.Dir(dir)
			continue
		}
		p := filepath.Join(dir, c)
		fi, err := os.Lstat(p)
		switch {
		case err != nil || len(rest) == 0 && fi.Mode()&os.ModeSymlink == 0:
			// Missing (it may be made again), or the file itself.
			dirs[dir], names[p] = true, true
			return dirs, names
		case fi.Mode()&os.ModeSymlink == 0:
			dir = p
			continue
		}
		dirs[dir], names[p] = true, true
		target, err := os.Readlink(p)
		if links++; err != nil || links > maxLinks {
			return dirs, names
		}
		if filepath.IsAbs(target) {
			dir = filepath.VolumeName(target) + string(filepath.Separator)
			target = target[len(dir):]
		}
		rest = append(strings.Split(target, string(filepath.Separator)), rest...)
	}
	return dirs, names
}

func (a *App) lastRulesSum() []byte {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	s := a.lastRules
	return s[:]
}
