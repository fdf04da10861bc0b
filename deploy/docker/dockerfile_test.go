package docker

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// images maps each Dockerfile to the binary it ships.
var images = map[string]string{
	"coreapi.Dockerfile":   "coreapi",
	"authproxy.Dockerfile": "authproxy",
	"notes.Dockerfile":     "notes",
}

// modDownloads returns the arguments of each `go mod download` in a
// command line (flags left out).
func modDownloads(fields []string) [][]string {
	var out [][]string
	for i := 0; i+2 < len(fields); i++ {
		if fields[i] != "go" || fields[i+1] != "mod" || fields[i+2] != "download" {
			continue
		}
		args := []string{}
		for _, a := range fields[i+3:] {
			if a == "&&" || a == ";" || a == "||" || a == "|" {
				break
			}
			if !strings.HasPrefix(a, "-") {
				args = append(args, a)
			}
		}
		out = append(out, args)
	}
	return out
}

// mainPackage is the package that builds a binary.
func mainPackage(bin string) string {
	if bin == "notes" {
		return "./deploy/examples/notes/cmd/notes"
	}
	return "./" + bin + "/cmd/" + bin
}

const repoRoot = "../.."

// instr is one Dockerfile instruction with continuation lines joined.
type instr struct {
	Cmd  string // upper case: FROM, COPY, RUN, ...
	Args string
}

type stage struct {
	From  string
	Name  string
	Instr []instr
	// Global holds the ARGs declared before the first FROM with their
	// defaults (the same map in every stage of a file).
	Global map[string]string
}

func parseDockerfile(r io.Reader) ([]stage, error) {
	var stages []stage
	global := map[string]string{} // ARGs before the first FROM
	sc := bufio.NewScanner(r)
	var cur strings.Builder
	flush := func() error {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instr{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			if len(f) == 0 {
				return fmt.Errorf("FROM without an image")
			}
			st := stage{From: f[0], Global: global}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				return fmt.Errorf("%s before FROM", in.Cmd)
			}
			k, v, _ := strings.Cut(in.Args, "=")
			global[k] = v
			return nil
		}
		stages[len(stages)-1].Instr = append(stages[len(stages)-1].Instr, in)
		return nil
	}
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(cont)
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

func loadDockerfile(t *testing.T, name string) []stage {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := parseDockerfile(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return st
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.Instr {
		if in.Cmd == cmd {
			out = append(out, in.Args)
		}
	}
	return out
}

// envOf returns the stage's ENV settings (KEY=VALUE form).
func (s stage) envOf() map[string]string {
	env := map[string]string{}
	for _, a := range s.all("ENV") {
		for _, kv := range strings.Fields(a) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	return env
}

// workspaceModules lists the directories named in go.work's use block.
func workspaceModules(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	for _, m := range regexp.MustCompile(`(?m)^\s*\./(\S+)\s*$`).FindAllStringSubmatch(string(data), -1) {
		mods = append(mods, m[1])
	}
	if len(mods) == 0 {
		t.Fatal("no modules found in go.work")
	}
	return mods
}

// TestImagesAreStaticNonRootMinimal checks each Dockerfile's shape.
func TestImagesAreStaticNonRootMinimal(t *testing.T) {
	mods := workspaceModules(t)
	for file, bin := range images {
		t.Run(file, func(t *testing.T) {
			stages := loadDockerfile(t, file)
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a multi-stage build", len(stages))
			}
			build, final := stages[0], stages[len(stages)-1]
			if !strings.HasPrefix(build.From, "golang:") && !strings.HasPrefix(build.From, "golang@") && !strings.Contains(build.From, "GO_VERSION") {
				t.Errorf("build stage FROM %s, want a golang image", build.From)
			}

			env := build.envOf()
			if env["CGO_ENABLED"] != "0" {
				t.Errorf("build stage CGO_ENABLED = %q, want 0 (static binary)", env["CGO_ENABLED"])
			}
			var buildCmd string
			for _, r := range build.all("RUN") {
				if strings.Contains(r, "go build") {
					buildCmd = r
				}
				// `go mod download` with no module fetches the module's whole
				// graph (test dependencies; for the example app the deploy
				// module's Kubernetes client, hundreds of MB); the build fetches
				// what the binary is built from.
				if f := strings.Fields(stripMounts(r)); slices.ContainsFunc(modDownloads(f), func(args []string) bool { return len(args) == 0 }) {
					t.Errorf("RUN %s downloads the whole module graph", r)
				}
			}
			for _, want := range []string{"-trimpath", `-ldflags="-s -w `, mainPackage(bin),
				"-X " + buildinfoPkg + ".version=${VERSION}", "-X " + buildinfoPkg + ".revision=${REVISION}"} {
				if !strings.Contains(buildCmd, want) {
					t.Errorf("go build command %q lacks %s", buildCmd, want)
				}
			}

			// The workspace needs every module's go.mod in the context.
			copied := strings.Join(build.all("COPY"), "\n")
			if !strings.Contains(copied, "go.work") {
				t.Error("build stage does not copy go.work")
			}
			for _, m := range mods {
				if !strings.Contains(copied, m+"/go.mod") {
					t.Errorf("build stage does not copy %s/go.mod (go.work uses it)", m)
				}
			}

			// Final stage: distroless static nonroot or scratch, uid 65532,
			// only the binary from the build stage.
			if !(strings.HasPrefix(final.From, "gcr.io/distroless/static") && strings.Contains(final.From, "nonroot")) && final.From != "scratch" {
				t.Errorf("final FROM %s, want gcr.io/distroless/static*:nonroot or scratch", final.From)
			}
			users := final.all("USER")
			if len(users) == 0 || (users[len(users)-1] != "65532:65532" && users[len(users)-1] != "65532") {
				t.Errorf("final USER = %v, want 65532", users)
			}
			for _, in := range final.Instr {
				switch in.Cmd {
				case "COPY":
					want := fmt.Sprintf("--from=%s /out/%s /%s", build.Name, bin, bin)
					if in.Args != want {
						t.Errorf("final COPY %q, want only %q", in.Args, want)
					}
				case "RUN", "ADD":
					t.Errorf("final stage runs %s %s; it must only copy the binary", in.Cmd, in.Args)
				}
			}
			checkBuildArgs(t, build, final)
			checkBaseImage(t, build.From)
			checkBaseImage(t, final.From)

			eps := final.all("ENTRYPOINT")
			if len(eps) != 1 || eps[0] != fmt.Sprintf(`["/%s"]`, bin) {
				t.Errorf("ENTRYPOINT = %v, want exec form [\"/%s\"]", eps, bin)
			}
		})
	}
}

const buildinfoPkg = "github.com/tollgate-auth/tollgate/shared/buildinfo"

// ociLabel matches one key="value" pair of a LABEL instruction.
var ociLabel = regexp.MustCompile(`([A-Za-z0-9._-]+)="([^"]*)"`)

// checkBuildArgs: VERSION and REVISION are global ARGs with defaults,
// declared again in the build stage (for -ldflags) and in the final stage
// (for the labels), and the final stage carries the OCI labels.
func checkBuildArgs(t *testing.T, build, final stage) {
	t.Helper()
	for _, a := range []string{"VERSION", "REVISION"} {
		if final.Global[a] == "" {
			t.Errorf("no global ARG %s=<default> before the first FROM", a)
		}
		for _, st := range []stage{build, final} {
			if !slices.Contains(st.all("ARG"), a) {
				t.Errorf("stage FROM %s does not declare ARG %s (it would be empty there)", st.From, a)
			}
		}
	}
	labels := map[string]string{}
	for _, l := range final.all("LABEL") {
		for _, m := range ociLabel.FindAllStringSubmatch(l, -1) {
			labels[m[1]] = m[2]
		}
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  "${VERSION}",
		"org.opencontainers.image.revision": "${REVISION}",
		"org.opencontainers.image.source":   "https://github.com/tollgate-auth/tollgate",
	} {
		if labels[k] != want {
			t.Errorf("LABEL %s = %q, want %q", k, labels[k], want)
		}
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.description"} {
		if labels[k] == "" {
			t.Errorf("LABEL %s missing", k)
		}
	}
}

// baseImage is name[:tag][@sha256:<64 hex>]; a digest, when given, must be
// well formed (docs/operations.md, "Images", says how to pin and update).
var baseImage = regexp.MustCompile(`^[a-z0-9.\-/]+(:[A-Za-z0-9_.${}\-]+)?(@sha256:[0-9a-f]{64})?$`)

func checkBaseImage(t *testing.T, from string) {
	t.Helper()
	if from == "scratch" {
		return
	}
	if !baseImage.MatchString(from) {
		t.Errorf("FROM %s: want name:tag or name:tag@sha256:<64 hex digits>", from)
	}
}

// TestBaseImageForm covers the FROM check on pinned and malformed forms.
func TestBaseImageForm(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for from, ok := range map[string]bool{
		"gcr.io/distroless/static-debian12:nonroot":               true,
		"gcr.io/distroless/static-debian12:nonroot@" + digest:     true,
		"golang:${GO_VERSION}":                                    true,
		"golang:${GO_VERSION}@" + digest:                          true,
		"golang:1.26@sha256:abc":                                  false,
		"golang:1.26@" + strings.ToUpper(digest):                  false,
		"gcr.io/distroless/static-debian12:nonroot@md5:" + digest: false,
	} {
		if got := baseImage.MatchString(from); got != ok {
			t.Errorf("%s: accepted = %v, want %v", from, got, ok)
		}
	}
}

// TestBuildStageReplay replays each Dockerfile's build stage without Docker:
// COPY from the repository through .dockerignore into a scratch /src, then
// the RUN commands with the stage's ENV. The binary must come out static and
// stripped. This catches a context that lacks a file the build needs.
func TestBuildStageReplay(t *testing.T) {
	ignore := loadIgnore(t)
	for file, bin := range images {
		t.Run(file, func(t *testing.T) {
			stages := loadDockerfile(t, file)
			build := stages[0]
			work := t.TempDir()
			src := filepath.Join(work, "src")
			out := filepath.Join(work, "out")
			env := append(os.Environ(), "GOWORK=", "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH, "GOTOOLCHAIN=local")
			for k, v := range build.Global {
				env = append(env, k+"="+v)
			}
			// As `docker build --build-arg VERSION=... --build-arg REVISION=...`.
			version, revision := "v0.0.0-replay", fmt.Sprintf("%x", time.Now().UnixNano())
			env = append(env, "VERSION="+version, "REVISION="+revision)
			for k, v := range build.envOf() {
				env = append(env, k+"="+v)
			}
			for _, in := range build.Instr {
				switch in.Cmd {
				case "WORKDIR":
					if in.Args != "/src" {
						t.Fatalf("WORKDIR %s, the replay assumes /src", in.Args)
					}
					if err := os.MkdirAll(src, 0o755); err != nil {
						t.Fatal(err)
					}
				case "COPY":
					if err := replayCopy(ignore, in.Args, src); err != nil {
						t.Fatalf("COPY %s: %v", in.Args, err)
					}
				case "RUN":
					cmdline := stripMounts(in.Args)
					cmdline = strings.ReplaceAll(cmdline, "/out/", out+"/")
					cmd := exec.Command("sh", "-c", cmdline)
					cmd.Dir = src
					cmd.Env = env
					if b, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("RUN %s: %v\n%s", cmdline, err, b)
					}
				}
			}
			checkStatic(t, filepath.Join(out, bin))
			// The image's binary reports the build arguments.
			for _, flag := range []string{"--version", "-version"} {
				got, err := exec.Command(filepath.Join(out, bin), flag).Output()
				if err != nil {
					t.Fatalf("%s %s: %v", bin, flag, err)
				}
				if want := fmt.Sprintf("%s %s (commit %s) %s\n", bin, version, revision, runtime.Version()); string(got) != want {
					t.Errorf("%s %s = %q, want %q", bin, flag, got, want)
				}
			}
		})
	}
}

// TestProxyImageListensOnItsInterfaces: the binary binds loopback by
// default, which inside a container no published port reaches; the
// image sets both listeners to the container's interfaces, on the ports
// it exposes.
func TestProxyImageListensOnItsInterfaces(t *testing.T) {
	stages := loadDockerfile(t, "authproxy.Dockerfile")
	final := stages[len(stages)-1]
	env := final.envOf()
	exposed := strings.Fields(strings.Join(final.all("EXPOSE"), " "))
	for name, port := range map[string]string{"PROXY_LISTEN_ADDR": "8080", "PROXY_ADMIN_ADDR": "9090"} {
		if env[name] != ":"+port {
			t.Errorf("%s = %q in the image, want %q", name, env[name], ":"+port)
		}
		if !slices.Contains(exposed, port) {
			t.Errorf("port %s of %s not exposed (EXPOSE %v)", port, name, exposed)
		}
	}
}

// TestIgnoreFileTrimsContext checks .dockerignore keeps tests, local data
// and VCS metadata out of the build context, and keeps the sources in.
func TestIgnoreFileTrimsContext(t *testing.T) {
	ignore := loadIgnore(t)
	tests := map[string]bool{ // path → excluded
		".git/config":                          true,
		".data/identity.key":                   true,
		"bin/coreapi":                          true,
		"coreapi/internal/users/users_test.go": true,
		"deploy/k8s/base/deployment.yaml":      true,
		"go.work":                              false,
		"shared/identity/identity.go":          false,
		"migrations/sql/00001_schema.sql":      false,
		"coreapi/cmd/coreapi/main.go":          false,
		"authproxy/go.sum":                     false,
		"deploy/go.mod":                        false,
		"deploy/examples/notes/notes.go":       false,
		"deploy/examples/notes/notes_test.go":  true,
		"deploy/k8s/sidecar_test.go":           true,
	}
	for p, want := range tests {
		got, err := ignore.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("excluded(%s) = %v, want %v", p, got, want)
		}
	}
}

func loadIgnore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

var mountFlag = regexp.MustCompile(`^--mount=\S+\s*`)

func stripMounts(s string) string {
	s = strings.TrimSpace(s)
	for mountFlag.MatchString(s) {
		s = strings.TrimSpace(mountFlag.ReplaceAllString(s, ""))
	}
	return s
}

// replayCopy performs COPY args (sources relative to the context, last
// field the destination relative to WORKDIR) into dst, skipping what the
// ignore file excludes; an excluded or missing source is an error, as in a
// real build.
func replayCopy(ignore *patternmatcher.PatternMatcher, args, dst string) error {
	f := strings.Fields(args)
	if len(f) > 0 && strings.HasPrefix(f[0], "--") {
		return fmt.Errorf("unexpected flag %s in the build stage", f[0])
	}
	if len(f) < 2 {
		return fmt.Errorf("want sources and a destination")
	}
	srcs, dest := f[:len(f)-1], f[len(f)-1]
	destDir := strings.HasSuffix(dest, "/") || len(srcs) > 1
	for _, s := range srcs {
		rel := path.Clean(s)
		st, err := os.Stat(filepath.Join(repoRoot, rel))
		if err != nil {
			return err
		}
		if !st.IsDir() {
			if ex, _ := ignore.MatchesOrParentMatches(rel); ex {
				return fmt.Errorf("%s is excluded by .dockerignore", rel)
			}
			target := filepath.Join(dst, dest)
			if destDir {
				target = filepath.Join(target, path.Base(rel))
			}
			if err := copyFile(filepath.Join(repoRoot, rel), target); err != nil {
				return err
			}
			continue
		}
		n := 0
		err = filepath.WalkDir(filepath.Join(repoRoot, rel), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			r, err := filepath.Rel(repoRoot, p)
			if err != nil {
				return err
			}
			r = filepath.ToSlash(r)
			if ex, err := ignore.MatchesOrParentMatches(r); err != nil || ex {
				return err
			}
			n++
			inner := strings.TrimPrefix(r, rel+"/")
			return copyFile(p, filepath.Join(dst, dest, inner))
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: every file is excluded by .dockerignore", rel)
		}
	}
	return nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// checkStatic asserts the ELF binary has no interpreter and no shared
// libraries, and no symbol table (-s).
func checkStatic(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("built binary: %v", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v: not static", p, libs)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table: not built with -ldflags=-s", p)
	}
}

// TestParseDockerfile covers the parser on the forms the Dockerfiles use.
func TestParseDockerfile(t *testing.T) {
	src := `# comment
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ENV A=1 B=2
RUN --mount=type=cache,target=/x \
    echo one \
    two
FROM scratch
USER 65532
`
	st, err := parseDockerfile(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Name != "build" || st[0].From != "golang:${GO_VERSION}" || st[1].From != "scratch" {
		t.Fatalf("stages = %+v", st)
	}
	if got := strings.Join(strings.Fields(stripMounts(st[0].all("RUN")[0])), " "); got != "echo one two" {
		t.Fatalf("RUN = %q", got)
	}
	if env := st[0].envOf(); env["A"] != "1" || env["B"] != "2" {
		t.Fatalf("ENV = %v", env)
	}
	if _, err := parseDockerfile(strings.NewReader("RUN echo\n")); err == nil {
		t.Fatal("RUN before FROM parsed without error")
	}
}
