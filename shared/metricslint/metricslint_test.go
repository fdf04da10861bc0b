package metricslint

import (
	"strings"
	"testing"
)

// TestMetricsProblems: each convention LintMetrics enforces is caught.
func TestMetricsProblems(t *testing.T) {
	good := `# HELP x_build_info Build.
# TYPE x_build_info gauge
x_build_info{goversion="go1.26.0",revision="abc",version="v1"} 1
# HELP x_requests_total Requests.
# TYPE x_requests_total counter
x_requests_total{code="404",method="GET",route="/a/:id"} 3
x_requests_total{code="200",method="POST",route="unmatched"} 1
# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 7
`
	if p, err := MetricsProblems(good, "x_"); err != nil || len(p) != 0 {
		t.Fatalf("good exposition: %v %v", p, err)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"no prefix":        {"# HELP requests_total R.\n# TYPE requests_total counter\nrequests_total 1\n", "want the x_ prefix"},
		"counter no total": {"# HELP x_requests R.\n# TYPE x_requests counter\nx_requests 1\n", "promlint: x_requests: counter metrics should have \"_total\" suffix"},
		"no help":          {"# TYPE x_up gauge\nx_up 1\n", "promlint: x_up: no help text"},
		"status label":     {"# HELP x_r_total R.\n# TYPE x_r_total counter\nx_r_total{status=\"200\"} 1\n", "label status"},
		"status class":     {"# HELP x_r_total R.\n# TYPE x_r_total counter\nx_r_total{code=\"4xx\"} 1\n", `code="4xx", want the exact status`},
		"route path":       {"# HELP x_r_total R.\n# TYPE x_r_total counter\nx_r_total{route=\"users\"} 1\n", `route="users"`},
		"method case":      {"# HELP x_r_total R.\n# TYPE x_r_total counter\nx_r_total{method=\"get\"} 1\n", `method="get"`},
		"milliseconds":     {"# HELP x_latency_milliseconds L.\n# TYPE x_latency_milliseconds gauge\nx_latency_milliseconds 1\n", "promlint: x_latency_milliseconds: use base unit"},
		"build info zero":  {"# HELP x_build_info B.\n# TYPE x_build_info gauge\nx_build_info 0\n", "x_build_info: want one series of value 1"},
	} {
		p, err := MetricsProblems(tc.body, "x_")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		joined := strings.Join(p, "\n")
		if !strings.Contains(joined, tc.want) {
			t.Errorf("%s: problems %q lack %q", name, joined, tc.want)
		}
		if name != "build info zero" && !strings.Contains(joined, "x_build_info is not exported") {
			t.Errorf("%s: missing build_info not reported: %q", name, joined)
		}
	}
	if _, err := MetricsProblems("not { an exposition", "x_"); err == nil {
		t.Error("garbage parsed without error")
	}
}

// TestUndocumented: a metric of the service the docs do not name is found;
// named ones (bare or with labels) and other prefixes are not.
func TestUndocumented(t *testing.T) {
	body := "# HELP x_a_total A.\n# TYPE x_a_total counter\nx_a_total 1\n" +
		"# HELP x_b_seconds B.\n# TYPE x_b_seconds gauge\nx_b_seconds{k=\"v\"} 1\n" +
		"# HELP x_c C.\n# TYPE x_c gauge\nx_c 1\n" +
		"# HELP go_goroutines G.\n# TYPE go_goroutines gauge\ngo_goroutines 1\n"
	got, err := Undocumented(body, "| `x_a_total` | counter |\n| `x_b_seconds{k}` | gauge |\n`x_cc`", "x_")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "x_c" {
		t.Errorf("Undocumented = %v, want [x_c]", got)
	}
}
