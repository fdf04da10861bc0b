package app

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

const (
	rulesA = appUpstream + "routes:\n  - {prefix: /notes, methods: [GET], upstream: notes, access: public}\n  - {prefix: /app, upstream: notes, access: public}\n"
	rulesB = appUpstream + "routes:\n  - {prefix: /notes, methods: [GET], upstream: notes, access: public}\n  - {prefix: /extra, upstream: notes, access: public}\n"
)

func (e *env) generation() float64 { return testutil.ToFloat64(e.app.Metrics.RulesGeneration) }
func (e *env) reloadFailures() float64 {
	return testutil.ToFloat64(e.app.Metrics.RulesReloadFailed)
}
func (e *env) reloadRefused() float64 {
	return testutil.ToFloat64(e.app.Metrics.RulesReloadRefused)
}
func (e *env) inPlaceReloads() float64 {
	return testutil.ToFloat64(e.app.Metrics.RulesReloadInPlace)
}

// wantReplacedLoaded waits for generation gen, loaded from a file
// replaced at since: well before a file written in place could be.
func (e *env) wantReplacedLoaded(gen float64, since time.Time) {
	e.t.Helper()
	testenv.Eventually(e.t, func() error { return testenv.Want("rules generation", e.generation(), gen) })
	if d := time.Since(since); d >= inPlaceSettle {
		e.t.Fatalf("a replaced file loaded after %v, want less than inPlaceSettle (%v)", d, inPlaceSettle)
	}
	if n := e.inPlaceReloads(); n != 0 {
		e.t.Fatalf("in-place reloads = %v after a replaced file, want 0", n)
	}
}

// writeRules replaces the rules file the way an editor does: a new file
// renamed over the old one.
func (e *env) writeRules(text string) {
	e.t.Helper()
	p := e.app.cfg.RulesFile
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(e.appRules(text)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		e.t.Fatal(err)
	}
}

func TestRulesReloadOnChange(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	if g := e.generation(); g != 1 {
		t.Fatalf("generation = %v, want 1", g)
	}
	e.wantProblem(e.do("GET", "/extra", "", nil), 404, problem.CodeNotFound)
	t0 := time.Now()
	e.writeRules(rulesB)
	e.wantReplacedLoaded(2, t0)
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
	e.wantProblem(e.do("GET", "/app/x", "", nil), 404, problem.CodeNotFound)
	if f := e.reloadFailures(); f != 0 {
		t.Fatalf("reload failures = %v", f)
	}
}

// TestRulesReloadBesideABusyFile: a file written without pause in the
// rules file's directory (a log) does not hold the reload back.
func TestRulesReloadBesideABusyFile(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	busy := filepath.Join(filepath.Dir(e.app.cfg.RulesFile), "service.log")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.Create(busy)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(reloadSettle / 10):
				_, _ = f.WriteString("a log line\n")
			}
		}
	}()
	defer func() { close(stop); <-done }()
	e.writeRules(rulesB)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
}

// A change made after the proxy read the file but before its watch was
// set sends no event; the watcher's first check still loads it.
func TestRulesChangedWhileStartingLoaded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA, beforeServe: func(e *env) { e.writeRules(rulesB) }})
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
}

// TestRulesReloadAfterEventsOverflow: when the kernel's queue of file
// events overflows, the events dropped may have been the rules file's
// change, and no other comes until the next one. The watcher reads the
// file again on the overflow and loads the change; it logs the overflow.
// Here the watcher's events never reach it (all dropped) and the
// overflow is injected.
func TestRulesReloadAfterEventsOverflow(t *testing.T) {
	overflow := make(chan error)
	e := start(t, envOpt{rules: rulesA, beforeServe: func(e *env) {
		e.app.rulesWatchEvents = func(<-chan fsnotify.Event, <-chan error) (<-chan fsnotify.Event, <-chan error) {
			return nil, overflow
		}
	}})
	// The first change: the check the watch makes once it is set may load
	// it, if it comes late enough. Once it is in, that check is done.
	e.writeRules(rulesB)
	overflow <- fsnotify.ErrEventOverflow
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	// The second change is seen only through the overflow.
	e.writeRules(rulesA)
	overflow <- fsnotify.ErrEventOverflow
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 3) })
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	e.wantProblem(e.do("GET", "/extra", "", nil), 404, problem.CodeNotFound)
	testenv.Eventually(t, func() error {
		return testenv.Contains("the log", e.logs.String(), "rules watch: events were lost; reading the rules file again")
	})
	// An overflow with the file unchanged reloads nothing.
	overflow <- fsnotify.ErrEventOverflow
	time.Sleep(3 * reloadSettle)
	if g, f := e.generation(), e.reloadFailures(); g != 3 || f != 0 {
		t.Fatalf("generation %v, failures %v after an overflow with the file unchanged, want 3 and 0", g, f)
	}
}

// An unchanged file is not reloaded when the watch starts.
func TestRulesUnchangedNotReloadedAtStart(t *testing.T) {
	e := start(t, envOpt{rules: rulesA})
	time.Sleep(3 * reloadSettle)
	if g, f := e.generation(), e.reloadFailures(); g != 1 || f != 0 {
		t.Fatalf("generation %v, failures %v after start, want 1 and 0", g, f)
	}
}

func TestRulesReloadSyntaxErrorKeepsRules(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	for i, bad := range []string{
		"routes: [", // YAML syntax error
		appUpstream + "routes: [{prefix: /api/v1/auth, upstream: notes, access: public}]", // shadows core
		"rules: [{path: /**, access: public}]",                                            // previous format
		// Parses, but names a key the proxy was not given.
		"upstreams:\n  notes:\n    url: {{APP}}\n    key_id: app-unknown\nroutes:\n  - {prefix: /extra, upstream: notes, access: public}\n",
	} {
		e.writeRules(bad)
		testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), float64(i+1)) })
		if g, r := e.generation(), e.reloadRefused(); g != 1 || r != 1 {
			t.Fatalf("generation = %v, reload refused = %v after a bad file, want 1 and 1", g, r)
		}
		// The previous rules still serve.
		e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
		e.wantProblem(e.do("GET", "/extra", "", nil), 404, problem.CodeNotFound)
	}
	// Every problem of a file is logged, each on its own.
	e.writeRules(appUpstream + "routes:\n  - {prefix: /a, upstream: nope, access: public}\n  - {prefix: /b, upstream: notes, access: sometimes}\n")
	testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), 5) })
	testenv.Eventually(t, func() error {
		return testenv.Contains("the log", e.logs.String(), `unknown upstream \"nope\"`, `access \"sometimes\"`, "the previous rules stay in force")
	})
	// Still refused, however long ago the refusal was counted: an alert
	// on the count's increase would have ended while the file stays bad.
	if r := e.reloadRefused(); r != 1 {
		t.Fatalf("reload refused = %v with the bad file in place, want 1", r)
	}
	e.writeRules(rulesB)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	if r := e.reloadRefused(); r != 0 {
		t.Fatalf("reload refused = %v after a good file loaded, want 0", r)
	}
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
}

// A file caught while it is written in place (truncated, then written: a
// shell's "> rules.yaml", an editor that does not rename, a slow copy) is
// empty, or stops before its routes, which is valid YAML: it keeps the
// previous rules instead of dropping every app route. The complete file
// then loads.
func TestRulesReloadHalfWrittenFileKeepsRules(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	for i, part := range []string{"", "# authproxy rules\n", appUpstream, appUpstream + "routes:\n"} {
		if err := os.WriteFile(e.app.cfg.RulesFile, []byte(e.appRules(part)), 0o600); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), float64(i+1)) })
		if g := e.generation(); g != 1 {
			t.Fatalf("generation = %v after %q, want 1", g, part)
		}
		e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	}
	testenv.Eventually(t, func() error { return testenv.Contains("the log", e.logs.String(), "no routes") })
	if err := os.WriteFile(e.app.cfg.RulesFile, []byte(e.appRules(rulesB)), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
}

func TestRulesReloadSIGHUPPath(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	// An explicit reload with unchanged content still swaps.
	if err := e.app.ReloadRules(); err != nil {
		t.Fatal(err)
	}
	if g := e.generation(); g != 2 {
		t.Fatalf("generation = %v, want 2", g)
	}
	// A file that cannot be read is a failure that keeps the rules.
	if err := os.Remove(e.app.cfg.RulesFile); err != nil {
		t.Fatal(err)
	}
	if err := e.app.ReloadRules(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if f := e.reloadFailures(); f < 1 {
		t.Fatalf("reload failures = %v", f)
	}
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
}

// A Kubernetes ConfigMap volume updates by swapping a "..data" symlink:
// the file the proxy names never changes itself.
func TestRulesReloadConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := start(t, envOpt{prepare: func(e *env, vars map[string]string) {
		for name, text := range map[string]string{"..2026_01": rulesA, "..2026_02": rulesB} {
			if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name, "rules.yaml"), []byte(e.appRules(text)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("..2026_01", filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("..data/rules.yaml", filepath.Join(dir, "rules.yaml")); err != nil {
			t.Fatal(err)
		}
		vars["RULES_FILE"] = filepath.Join(dir, "rules.yaml")
	}})
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	t0 := time.Now()
	if err := os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	e.wantReplacedLoaded(2, t0)
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
	e.wantProblem(e.do("GET", "/app/x", "", nil), 404, problem.CodeNotFound)
}

// A request in flight finishes on the rules it started with, even when a
// reload removes its upstream.
func TestRulesReloadInFlight(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	gate := make(chan struct{})
	e.up.StreamGate.Store(&gate)
	resp, err := e.client.Get("http://" + e.addr + "/app/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, testenv.StreamChunk)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	e.writeRules("routes: []\n")
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantProblem(e.do("GET", "/app/x", "", nil), 404, problem.CodeNotFound)
	close(gate)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != testenv.StreamChunk || resp.StatusCode != http.StatusOK {
		t.Fatalf("in-flight response: %d, %d bytes, %v", resp.StatusCode, len(rest), err)
	}
}

// A request that waited for "100 Continue" is routed once, by the
// expectation hook, and finishes on that route table when a reload swaps
// in another before its body arrives: its headers and its body are never
// judged by two tables (before, the handler routed it again, on the new
// one, and refused it 404).
func TestRulesReloadAfterContinue(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	conn, br := dialProxy(t, e.addr)
	if _, err := io.WriteString(conn, "POST /app/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("interim answer: %v, %v; want 100 Continue", resp, err)
	}
	e.writeRules("routes: []\n")
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantProblem(e.do("POST", "/app/x", "", nil), 404, problem.CodeNotFound)
	if _, err := io.WriteString(conn, "ok"); err != nil {
		t.Fatal(err)
	}
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the reload: %d %s, want 200 from the route it was told to continue on", resp.StatusCode, body)
	}
	if got := e.up.Last(t); got.URI != "/app/x" || string(got.Body) != "ok" {
		t.Fatalf("the app got %s %q", got.URI, got.Body)
	}
}

// TestRulesReloadRouteOptions: a reload that sets, then drops, an
// upstream's rewrite_host and timeout and a route's strip_prefix and
// max_body_bytes applies to the next requests.
func TestRulesReloadRouteOptions(t *testing.T) {
	const plain = appUpstream + "routes:\n  - {prefix: /app, upstream: notes, access: public}\n"
	const options = `
upstreams:
  notes: {url: "{{APP}}", key_id: app-notes, rewrite_host: true, timeout: 5s}
routes:
  - {prefix: /app, upstream: notes, access: public, strip_prefix: true, max_body_bytes: 200000}
`
	e := start(t, envOpt{vars: map[string]string{"UPSTREAM_TIMEOUT": "300ms"}, rules: plain})
	check := func(set bool) {
		t.Helper()
		e.reset()
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/app/x", strings.NewReader(strings.Repeat("a", 100_000)))
		req.Host = "client.example"
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		gate := make(chan struct{})
		e.up.SlowGate.Store(&gate)
		time.AfterFunc(time.Second, func() { close(gate) })
		slow := e.do("GET", "/app/slow", "", nil).status
		if !set {
			if resp.StatusCode != 413 || slow != 504 {
				t.Fatalf("without the options: body over MAX_BODY_BYTES %d, slow answer %d; want 413, 504", resp.StatusCode, slow)
			}
			return
		}
		got := e.up.Received()
		if resp.StatusCode != 200 || slow != 200 || len(got) < 1 || got[0].URI != "/x" || got[0].Headers["Host"][0] != e.up.Addr {
			t.Fatalf("with the options: %d, slow answer %d, upstream got %+v", resp.StatusCode, slow, got)
		}
	}
	check(false)
	e.writeRules(options)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	check(true)
	e.writeRules(plain)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 3) })
	check(false)
}

const rulesC = appUpstream + "routes:\n  - {prefix: /third, upstream: notes, access: public}\n"

// swapLink points the symlink at link to target the way kubelet swaps a
// ConfigMap's "..data": a new link renamed over the old one.
func swapLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link+"_tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+"_tmp", link); err != nil {
		t.Fatal(err)
	}
}

// writeFile writes a rules file for the test app, creating its directory.
func (e *env) writeFile(path, text string) {
	e.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(e.appRules(text)), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// A ConfigMap key mounted under a directory (items: path conf/rules.yaml)
// is reached through two symlinks, conf -> ..data/conf and ..data ->
// ..<timestamp>: the directory holding the file is the timestamped one,
// which each update deletes. Every update is seen, not only the first.
func TestRulesReloadConfigMapKeyInADirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := start(t, envOpt{prepare: func(e *env, vars map[string]string) {
		e.writeFile(filepath.Join(dir, "..2026_01", "conf", "rules.yaml"), rulesA)
		for target, link := range map[string]string{"..2026_01": "..data", "..data/conf": "conf"} {
			if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
				t.Fatal(err)
			}
		}
		vars["RULES_FILE"] = filepath.Join(dir, "conf", "rules.yaml")
	}})
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	old := "..2026_01"
	for i, u := range []struct{ version, text, path string }{
		{"..2026_02", rulesB, "/extra"},
		{"..2026_03", rulesC, "/third"},
		{"..2026_04", rulesA, "/app/x"},
	} {
		e.writeFile(filepath.Join(dir, u.version, "conf", "rules.yaml"), u.text)
		swapLink(t, u.version, filepath.Join(dir, "..data"))
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
		old = u.version
		testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), float64(i+2)) })
		e.wantStatus(e.do("GET", u.path, "", nil), 200)
	}
}

// RULES_FILE under a symlinked directory (current -> releases/1, switched
// by a deploy) follows the link when it is switched.
func TestRulesReloadSymlinkedDirectorySwitched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := start(t, envOpt{prepare: func(e *env, vars map[string]string) {
		e.writeFile(filepath.Join(dir, "releases", "1", "rules.yaml"), rulesA)
		e.writeFile(filepath.Join(dir, "releases", "2", "rules.yaml"), rulesB)
		if err := os.Symlink("releases/1", filepath.Join(dir, "current")); err != nil {
			t.Fatal(err)
		}
		vars["RULES_FILE"] = filepath.Join(dir, "current", "rules.yaml")
	}})
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	swapLink(t, "releases/2", filepath.Join(dir, "current"))
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
	// Back to the first release, and the one left behind no longer counts.
	swapLink(t, "releases/1", filepath.Join(dir, "current"))
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 3) })
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	e.writeFile(filepath.Join(dir, "releases", "2", "rules.yaml"), rulesC)
	e.writeFile(filepath.Join(dir, "releases", "1", "rules.yaml"), rulesC)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 4) })
	e.wantStatus(e.do("GET", "/third", "", nil), 200)
}

// The rules file's directory replaced by another (moved away, a new one
// made in its place) is watched in its new form.
func TestRulesReloadDirectoryReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	e := start(t, envOpt{prepare: func(e *env, vars map[string]string) {
		e.writeFile(filepath.Join(conf, "rules.yaml"), rulesA)
		vars["RULES_FILE"] = filepath.Join(conf, "rules.yaml")
	}})
	if err := os.Rename(conf, conf+".old"); err != nil {
		t.Fatal(err)
	}
	e.writeFile(filepath.Join(conf, "rules.yaml"), rulesB)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
	// And the new directory's file is watched in its turn.
	e.writeFile(filepath.Join(conf, "rules.yaml"), rulesC)
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 3) })
	e.wantStatus(e.do("GET", "/third", "", nil), 200)
}

// watchPoints stops at a symlink loop, and watches for a missing
// directory to be made in its parent.
func TestWatchPointsLoopAndMissing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Symlink("b", filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	dirs, names := watchPoints(filepath.Join(dir, "a", "rules.yaml"))
	if len(dirs) != 1 || !dirs[dir] || !names[filepath.Join(dir, "a")] || !names[filepath.Join(dir, "b")] {
		t.Fatalf("loop: dirs %v, names %v", dirs, names)
	}
	dirs, names = watchPoints(filepath.Join(dir, "conf", "rules.yaml"))
	if len(dirs) != 1 || !dirs[dir] || len(names) != 1 || !names[filepath.Join(dir, "conf")] {
		t.Fatalf("missing: dirs %v, names %v", dirs, names)
	}
}

// A reloaded file whose upstream URL carries a password is refused, and
// the log of the refusal does not hold the password.
func TestRulesReloadURLPasswordNotLogged(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	e.writeRules("upstreams:\n  notes:\n    url: http://admin:s3cr3t@127.0.0.1:1\n    key_id: app-notes\nroutes: []\n")
	testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), 1) })
	testenv.Eventually(t, func() error {
		return testenv.Contains("the log", e.logs.String(), "the previous rules stay in force", "xxxxx@127.0.0.1:1")
	})
	if strings.Contains(e.logs.String(), "s3cr3t") {
		t.Fatalf("the password is in the log:\n%s", e.logs.String())
	}
}

// TestRulesReloadFileRestoredAfterRemoval: a rules file that vanishes (or
// cannot be read) is a refused reload, the table in force kept; when the
// same content comes back, the file on disk is again the table in force,
// so the refusal is over: authproxy_rules_reload_refused (and the alert on
// it) goes back to 0. It stayed 1 because the content equalled the last
// one read and was skipped, until the next change of the file.
func TestRulesReloadFileRestoredAfterRemoval(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	p := e.app.cfg.RulesFile
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), 1) })
	if r := e.reloadRefused(); r != 1 {
		t.Fatalf("reload refused = %v with the file gone, want 1", r)
	}
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	e.writeRules(rulesA)
	testenv.Eventually(t, func() error { return testenv.Want("reload refused", e.reloadRefused(), 0) })
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	e.wantProblem(e.do("GET", "/extra", "", nil), 404, problem.CodeNotFound)
	if f := e.reloadFailures(); f != 1 {
		t.Fatalf("reload failures = %v, want 1", f)
	}
}

// TestRulesReloadOversizedFileRefused: at a reload, as at start, a rules
// file of more than rules.MaxFileSize bytes is refused (the table in force
// kept, the refusal logged and counted), not read whole into a serving
// proxy's memory.
func TestRulesReloadOversizedFileRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	huge := rulesB + strings.Repeat("#"+strings.Repeat("x", 1023)+"\n", rules.MaxFileSize>>10)
	e.writeRules(huge)
	testenv.Eventually(t, func() error { return testenv.Want("reload failures", e.reloadFailures(), 1) })
	if g, r := e.generation(), e.reloadRefused(); g != 1 || r != 1 {
		t.Fatalf("generation = %v, reload refused = %v after an oversized file, want 1 and 1", g, r)
	}
	testenv.Eventually(t, func() error { return testenv.Contains("the log", e.logs.String(), "more than 4 MiB") })
	e.wantStatus(e.do("GET", "/app/x", "", nil), 200)
	e.wantProblem(e.do("GET", "/extra", "", nil), 404, problem.CodeNotFound)
}

// TestRulesReloadLogsHeadWithoutGet: a reloaded file whose route admits
// HEAD but not GET is taken, with its warning in the log (as at start).
func TestRulesReloadLogsHeadWithoutGet(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesA})
	e.writeRules(appUpstream + "routes:\n  - {prefix: /notes, methods: [HEAD, POST], upstream: notes, access: public}\n")
	if err := e.app.ReloadRules(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error {
		return testenv.Contains("the log", e.logs.String(), `"msg":"rules: warning"`, "route 1 (/notes): methods hold HEAD but not GET")
	})
}

// rulesNotesWrite lets POST /notes through only with notes:write, and
// serves /app.
const rulesNotesWrite = appUpstream + "routes:\n  - {prefix: /notes, methods: [POST], upstream: notes, access: protected, permissions: [notes:write]}\n  - {prefix: /app, upstream: notes, access: public}\n"

// rulesNotesWriteHead is a file that serves /extra instead of /app, and
// keeps POST /notes to notes:write, without its last line: the route's
// permissions. Cut there it is valid YAML, and a table that lets any
// valid token POST to /notes.
const (
	rulesNotesWriteHead = appUpstream + "routes:\n  - {prefix: /extra, upstream: notes, access: public}\n  - prefix: /notes\n    methods: [POST]\n    upstream: notes\n    access: protected\n"
	rulesNotesWriteTail = "    permissions: [notes:write]\n"
)

// TestRulesReloadPausedInPlaceWriteKeepsRules: a file written in place
// (truncated, then written through the same file: a shell's ">", an
// editor that does not rename, a generator writing through a pipe) that
// pauses inside its list of routes, longer than the settle after a
// change, is not loaded as it stands: the stricter table in force keeps
// refusing POST /notes without notes:write during the pause, and the
// complete file loads once it has stayed the same for inPlaceSettle.
func TestRulesReloadPausedInPlaceWriteKeepsRules(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: rulesNotesWrite})
	tok := e.token(nil) // tenant:read only
	post := func() result { return e.do("POST", "/notes", tok, nil) }
	e.wantProblem(post(), 403, problem.CodeInsufficientScope)
	f, err := os.OpenFile(e.app.cfg.RulesFile, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(e.appRules(rulesNotesWriteHead)); err != nil {
		t.Fatal(err)
	}
	// The writer pauses for 300 ms; the table in force stays throughout.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		e.wantProblem(post(), 403, problem.CodeInsufficientScope)
	}
	if g := e.generation(); g != 1 {
		t.Fatalf("generation = %v during the pause, want 1", g)
	}
	if _, err := f.WriteString(rulesNotesWriteTail); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
	e.wantProblem(e.do("GET", "/app/x", "", nil), 404, problem.CodeNotFound)
	e.wantProblem(post(), 403, problem.CodeInsufficientScope)
	if f, n := e.reloadFailures(), e.inPlaceReloads(); f != 0 || n != 1 {
		t.Fatalf("reload failures = %v, in-place reloads = %v, want 0 and 1", f, n)
	}
	testenv.Eventually(t, func() error {
		return testenv.Contains("the log", e.logs.String(), "rules file written in place", "rename it over the rules file")
	})
}

// TestRulesReloadInPlaceChangedBetweenReads: a file written in place is
// loaded only when two reads inPlaceSettle apart found it the same, even
// when its writes send no event (a filesystem that reports none, events
// lost): here the watcher hears of the first write only. Read once after
// a quiet second, the file would be loaded cut short, its POST /notes
// without permissions. Each part is written right after one of the
// watcher's reads (rulesReadDone), so every read finds the file changed
// since the one before, however late the machine runs either side.
func TestRulesReloadInPlaceChangedBetweenReads(t *testing.T) {
	t.Parallel()
	events := make(chan fsnotify.Event)
	reads := make(chan struct{}, 16)
	e := start(t, envOpt{rules: rulesNotesWrite, beforeServe: func(e *env) {
		e.app.rulesWatchEvents = func(_ <-chan fsnotify.Event, errs <-chan error) (<-chan fsnotify.Event, <-chan error) {
			return events, errs
		}
		e.app.rulesReadDone = func() { reads <- struct{}{} }
	}})
	read := func(what string) {
		t.Helper()
		select {
		case <-reads:
		case <-time.After(10 * time.Second):
			t.Fatalf("the watcher did not read the rules file %s", what)
		}
	}
	read("at its first check") // the file as start found it: unchanged
	tok := e.token(nil)        // tenant:read only
	p := e.app.cfg.RulesFile
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := e.appRules(rulesNotesWriteHead)
	cut := strings.Index(head, "  - prefix: /notes")
	for i, part := range []string{head[:cut], head[cut:], rulesNotesWriteTail} {
		if _, err := f.WriteString(part); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			events <- fsnotify.Event{Name: p, Op: fsnotify.Write}
		}
		read(fmt.Sprintf("after part %d was written", i+1))
		if g := e.generation(); g != 1 {
			t.Fatalf("generation = %v while the file is written, want 1", g)
		}
	}
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	e.wantProblem(e.do("POST", "/notes", tok, nil), 403, problem.CodeInsufficientScope)
	e.wantStatus(e.do("GET", "/extra", "", nil), 200)
}
