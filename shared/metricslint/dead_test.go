package metricslint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// module writes files (name → source) under a temporary root.
func module(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, src := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// metricsSrc is a metrics package in the shape of the services': exported
// fields updated from another package, unexported ones from their own,
// children stored under names, series exported at zero from the start.
const metricsSrc = `package metrics

import "github.com/prometheus/client_golang/prometheus"

const CacheToken = "token"

type Metrics struct {
	Requests  *prometheus.CounterVec
	Errors    *prometheus.CounterVec
	Keys      prometheus.Gauge
	VerifyOK  prometheus.Counter
	hits      *prometheus.CounterVec
	latency   prometheus.Histogram
}

func New(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "svc_requests_total", Help: "R."}, []string{"code"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "svc_errors_total", Help: "E."}, []string{"target", "kind"}),
		Keys: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "svc", Name: "keys", Help: "K."}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "svc_hits_total", Help: "H."}, []string{"cache"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "svc_latency_seconds", Help: "L."}),
	}
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "svc_age_seconds", Help: "A."}, func() float64 { return 1 }))
	for _, tk := range [][2]string{{"forward", "timeout"}, {"forward", "transport"}, {"jwks", "status"}} {
		m.Errors.WithLabelValues(tk[0], tk[1])
	}
	m.VerifyOK = m.Requests.WithLabelValues("200")
	return m
}

func (m *Metrics) Hit(name string) { m.hits.WithLabelValues(name).Inc() }

func (m *Metrics) Observe(s float64) {
	l := m.latency
	l.Observe(s)
}
`

// userSrc updates the metrics from another package.
const userSrc = `package user

import (
	"errors"

	"example/metrics"
)

func classify(err error) string {
	if errors.Is(err, errTimeout) {
		return "timeout"
	}
	return "transport"
}

var errTimeout = errors.New("timeout")

func use(m *metrics.Metrics, err error) {
	m.VerifyOK.Inc()
	m.Keys.Set(2)
	m.Hit(metrics.CacheToken)
	m.Errors.WithLabelValues("forward", classify(err)).Inc()
	kind := "status"
	m.Errors.WithLabelValues("jwks", kind).Inc()
}
`

func TestDeadLive(t *testing.T) {
	root := module(t, map[string]string{"metrics/metrics.go": metricsSrc, "user/user.go": userSrc})
	r, err := Dead(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 {
		t.Errorf("problems in a live module: %q", r.Problems)
	}
	for _, name := range []string{"svc_requests_total", "svc_errors_total", "svc_keys", "svc_hits_total", "svc_latency_seconds", "svc_age_seconds"} {
		if m := r.Metrics[name]; m == nil || !m.Live {
			t.Errorf("%s: %+v, want a live metric", name, m)
		}
	}
}

// TestDeadFindsEach: each way of being always zero is reported, and only
// that one.
func TestDeadFindsEach(t *testing.T) {
	for name, tc := range map[string]struct {
		metrics, user, want string
	}{
		"dead metric": {
			strings.Replace(metricsSrc, "\tr.MustRegister(", "\tr.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: \"svc_dead_total\", Help: \"D.\"}))\n\tr.MustRegister(", 1),
			userSrc, "svc_dead_total (NewCounter) is never updated",
		},
		"gauge nothing sets": {metricsSrc, strings.Replace(userSrc, "m.Keys.Set(2)", "_ = m.Keys", 1), "svc_keys (NewGauge) is never updated"},
		"vec never updated": {
			strings.Replace(metricsSrc, "{ m.hits.WithLabelValues(name).Inc() }", "{ _ = name }", 1),
			userSrc, "svc_hits_total (NewCounterVec) is never updated",
		},
		"pre-initialised label no update makes": {
			strings.Replace(metricsSrc, `{"jwks", "status"}}`, `{"jwks", "status"}, {"jwks", "timeout"}}`, 1),
			userSrc, `svc_errors_total: series {"jwks","timeout"} is exported at start but no update produces it`,
		},
		"pre-initialised literal no function returns": {
			strings.Replace(metricsSrc, "\treturn m\n}", "\tm.Errors.WithLabelValues(\"forward\", \"dns\")\n\treturn m\n}", 1),
			userSrc, `series {"forward","dns"}`,
		},
		// Its only child: the metric is dead too.
		"named child never updated": {metricsSrc, strings.Replace(userSrc, "m.VerifyOK.Inc()", "", 1),
			"svc_requests_total: the child VerifyOK is stored but never updated\nsvc_requests_total (NewCounterVec) is never updated"},
		"pre-initialised from a variable": {
			strings.Replace(metricsSrc, "\treturn m\n}", "\tk := \"x\"\n\tm.hits.WithLabelValues(k)\n\treturn m\n}", 1),
			userSrc, "svc_hits_total: pre-initialised label values that are neither literals nor a range",
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := module(t, map[string]string{"metrics/metrics.go": tc.metrics, "user/user.go": tc.user,
				// A test's updates do not count.
				"user/user_test.go": "package user\nfunc x(m *metrics.Metrics) { m.Keys.Set(1) }\n"})
			r, err := Dead(root)
			if err != nil {
				t.Fatal(err)
			}
			wants := strings.Split(tc.want, "\n")
			if len(r.Problems) != len(wants) {
				t.Fatalf("problems %q, want %d: %q", r.Problems, len(wants), wants)
			}
			for _, w := range wants {
				if !strings.Contains(strings.Join(r.Problems, "\n"), w) {
					t.Errorf("problems %q lack %q", r.Problems, w)
				}
			}
		})
	}
}

func TestAlwaysZero(t *testing.T) {
	body := "# HELP x_a_total A.\n# TYPE x_a_total counter\nx_a_total{k=\"1\"} 0\nx_a_total{k=\"2\"} 3\n" +
		"# HELP x_b_total B.\n# TYPE x_b_total counter\nx_b_total{k=\"1\"} 0\nx_b_total{k=\"2\"} 0\n" +
		"# HELP x_c_seconds C.\n# TYPE x_c_seconds histogram\nx_c_seconds_bucket{le=\"+Inf\"} 0\nx_c_seconds_sum 0\nx_c_seconds_count 0\n" +
		"# HELP x_d_seconds D.\n# TYPE x_d_seconds histogram\nx_d_seconds_bucket{le=\"+Inf\"} 1\nx_d_seconds_sum 0\nx_d_seconds_count 1\n" +
		"# HELP x_e E.\n# TYPE x_e gauge\nx_e 0\n" +
		"# HELP x_f_total F.\n# TYPE x_f_total counter\nx_f_total 0\n" +
		"# HELP go_gc_total G.\n# TYPE go_gc_total counter\ngo_gc_total 0\n"
	got, err := AlwaysZero(body, "x_", map[string]string{"x_f_total": "failures"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "x_b_total,x_c_seconds,x_e" {
		t.Errorf("AlwaysZero = %v, want [x_b_total x_c_seconds x_e]", got)
	}
}

// TestAllowListProblems: an allowed name must be a live metric of the
// code, without a problem, and come with a reason.
func TestAllowListProblems(t *testing.T) {
	src := strings.Replace(metricsSrc, `{"jwks", "status"}}`, `{"jwks", "status"}, {"jwks", "timeout"}}`, 1)
	src = strings.Replace(src, "\tr.MustRegister(", "\tr.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: \"svc_dead_total\", Help: \"D.\"}))\n\tr.MustRegister(", 1)
	root := module(t, map[string]string{"metrics/metrics.go": src, "user/user.go": userSrc})
	got := strings.Join(AllowListProblems(root, map[string]string{
		"svc_hits_total":   "misses only",
		"svc_dead_total":   "failures",
		"svc_errors_total": "failures",
		"svc_gone_total":   "failures",
		"svc_keys":         " ",
	}), "\n")
	for _, want := range []string{
		"svc_dead_total is allowed to stay zero but nothing under",
		`svc_errors_total is allowed to stay zero but: ` + filepath.Join(root, "metrics/metrics.go"),
		"svc_gone_total is allowed to stay zero but no code under",
		"svc_keys is allowed to stay zero without a reason",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems\n%s\nlack %q", got, want)
		}
	}
	if strings.Contains(got, "svc_hits_total") {
		t.Errorf("a live metric reported: %s", got)
	}
}

// inspectStack hands each node its ancestors, and a subtree it is told to
// skip leaves the stack as it found it.
func TestInspectStack(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", "package x\nfunc a() { _ = func() { b() } }\nfunc c() { d() }\n", 0)
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	inspectStack(f, func(n ast.Node, stack []ast.Node) bool {
		if stack[0] != f || stack[len(stack)-1] != n {
			t.Fatalf("stack of %T runs from %T to %T", n, stack[0], stack[len(stack)-1])
		}
		if _, ok := n.(*ast.FuncDecl); ok && len(stack) != 2 {
			t.Fatalf("a top-level function has %d nodes on its stack, want 2 (file, function)", len(stack))
		}
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		if call, ok := n.(*ast.CallExpr); ok {
			fd, _ := enclosingFunc(stack).(*ast.FuncDecl)
			if fd == nil {
				t.Fatalf("call %s outside a declared function", lastIdent(call.Fun))
			}
			calls = append(calls, fd.Name.Name+">"+lastIdent(call.Fun))
		}
		return true
	})
	if got := strings.Join(calls, " "); got != "c>d" {
		t.Errorf("calls = %q, want only c>d (the literal in a skipped)", got)
	}
}
