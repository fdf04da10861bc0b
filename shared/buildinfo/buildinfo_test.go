package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}, {Key: "-trimpath", Value: "true"},
	}}
	tests := []struct {
		name   string
		bi     *debug.BuildInfo
		ok     bool
		ld     [2]string
		want   Info
		line   string
		labels string
	}{
		{"recorded", bi, true, [2]string{}, Info{"(devel)", "0123456789abcdef", true, "go1.26.0"},
			"x (devel) (commit 0123456789abcdef, modified) go1.26.0", "(devel),0123456789abcdef-modified,go1.26.0"},
		{"linker wins", bi, true, [2]string{"v1.4.0", "fedcba"}, Info{"v1.4.0", "fedcba", false, "go1.26.0"},
			"x v1.4.0 (commit fedcba) go1.26.0", "v1.4.0,fedcba,go1.26.0"},
		{"linker version only", bi, true, [2]string{" v2 ", ""}, Info{"v2", "0123456789abcdef", true, "go1.26.0"},
			"x v2 (commit 0123456789abcdef, modified) go1.26.0", "v2,0123456789abcdef-modified,go1.26.0"},
		{"no build info", nil, false, [2]string{}, Info{Unknown, Unknown, false, Unknown},
			"x unknown (commit unknown) unknown", "unknown,unknown,unknown"},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.26.0"}, true, [2]string{}, Info{Unknown, Unknown, false, "go1.26.0"},
			"x unknown (commit unknown) go1.26.0", "unknown,unknown,go1.26.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(tc.bi, tc.ok, tc.ld[0], tc.ld[1])
			if got != tc.want {
				t.Fatalf("Info = %+v, want %+v", got, tc.want)
			}
			if s := got.String("x"); s != tc.line {
				t.Errorf("String = %q, want %q", s, tc.line)
			}
			if l := strings.Join(got.Labels(), ","); l != tc.labels {
				t.Errorf("Labels = %q, want %q", l, tc.labels)
			}
		})
	}
}

func TestRequested(t *testing.T) {
	for args, want := range map[string]bool{
		"--version": true, "-version": true, "--version serve": true, "serve --version": true,
		"migrate up -version": true, "-check-config -version=true": true,
		"": false, "-- --version": false, "-v": false, "--versions": false, "version": false, "-version=false": false,
	} {
		if got := Requested(strings.Fields(args)); got != want {
			t.Errorf("Requested(%q) = %v, want %v", args, got, want)
		}
	}
}

// buildPrintVersion builds testdata/printversion with extra go build
// arguments and returns its --version line.
func buildPrintVersion(t *testing.T, extra ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "printversion")
	args := append([]string{"build", "-o", bin}, extra...)
	cmd := exec.Command("go", append(args, "./testdata/printversion")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("printversion --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestLinkerOverride builds a binary the way the Dockerfiles do (no VCS
// stamping, the values through -ldflags -X).
func TestLinkerOverride(t *testing.T) {
	pkg := "github.com/tollgate-auth/tollgate/shared/buildinfo"
	got := buildPrintVersion(t, "-buildvcs=false", "-ldflags=-X "+pkg+".version=v9.8.7 -X "+pkg+".revision=abc123")
	want := "printversion v9.8.7 (commit abc123) " + runtime.Version()
	if got != want {
		t.Errorf("--version = %q, want %q", got, want)
	}
	got = buildPrintVersion(t, "-buildvcs=false")
	if want := "printversion (devel) (commit unknown) " + runtime.Version(); got != want {
		t.Errorf("without VCS or linker values: --version = %q, want %q", got, want)
	}
}

// TestVCSStamp builds the program in a fresh git repository (a clone's
// layout: Go records VCS details only where .git is a directory, not in a
// linked worktree or a build context without .git): the binary names the
// commit, and "modified" once the tree has a local change.
func TestVCSStamp(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"go.mod": "module github.com/tollgate-auth/tollgate/shared\n\ngo 1.26.0\n"}
	for _, f := range []string{"buildinfo.go", "testdata/printversion/main.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Join("buildinfo", f)] = string(b)
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "x")
	head := git("rev-parse", "HEAD")
	build := func() string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "printversion")
		cmd := exec.Command("go", "build", "-o", bin, "./buildinfo/testdata/printversion")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=true")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, b)
		}
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatalf("printversion --version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	// Go derives a pseudo-version from the commit for the main module.
	pseudo := "v0.0.0-"
	clean := build()
	if !strings.HasPrefix(clean, "printversion "+pseudo) || !strings.HasSuffix(clean, head[:12]+" (commit "+head+") "+runtime.Version()) {
		t.Errorf("clean tree: --version = %q, want printversion %s…-%s (commit %s) %s", clean, pseudo, head[:12], head, runtime.Version())
	}
	if err := os.WriteFile(filepath.Join(dir, "NOTES"), []byte("local change\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirty := build()
	if !strings.HasSuffix(dirty, head[:12]+"+dirty (commit "+head+", modified) "+runtime.Version()) {
		t.Errorf("modified tree: --version = %q, want …%s+dirty (commit %s, modified) %s", dirty, head[:12], head, runtime.Version())
	}
}
