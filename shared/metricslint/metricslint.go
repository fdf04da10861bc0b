// Package metricslint checks a Prometheus /metrics exposition against the rules of
// `promtool check metrics` and the conventions both Tollgate services follow,
// and checks that no metric stays zero forever (Dead over a module's code,
// AlwaysZero over a live exposition); their tests lint their live endpoints
// and their code with it.
package metricslint

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// LintMetrics checks a /metrics exposition (text format) against the rules
// of `promtool check metrics` (client_golang's testutil/promlint) and
// Tollgate's conventions, reporting every problem: the service's own
// metrics start with prefix (only client_golang's own go_*, process_* and
// promhttp_* do not); a status is the label code and holds the
// exact status ("404", never "4xx"); a route label holds the route
// template ("/api/v1/users/:id", or "unmatched"); a method label is an
// upper-case HTTP method; and <prefix>build_info is exported with value 1.
func LintMetrics(t testing.TB, body, prefix string) {
	t.Helper()
	problems, err := MetricsProblems(body, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// MetricsProblems returns what LintMetrics reports, one line a problem.
func MetricsProblems(body, prefix string) ([]string, error) {
	var out []string
	report := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		return nil, fmt.Errorf("promlint: %w", err)
	}
	for _, p := range problems {
		report("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	if _, ok := mfs[prefix+"build_info"]; !ok {
		report("%sbuild_info is not exported", prefix)
	}
	names := make([]string, 0, len(mfs))
	for name := range mfs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		mf := mfs[name]
		if !strings.HasPrefix(name, prefix) && !standard(name) {
			report("%s: want the %s prefix", name, prefix)
		}
		if name == prefix+"build_info" && (len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1) {
			report("%s: want one series of value 1", name)
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				switch l.GetName() {
				case "status", "status_code", "route_template", "path":
					report("%s: label %s: call a status code \"code\" and a route template \"route\"", name, l.GetName())
				case "code":
					if !exactStatus.MatchString(v) {
						report("%s: code=%q, want the exact status", name, v)
					}
				case "route":
					if v != "unmatched" && !strings.HasPrefix(v, "/") {
						report("%s: route=%q, want a route template", name, v)
					}
				case "method":
					if v == "" || strings.ToUpper(v) != v {
						report("%s: method=%q, want an upper-case HTTP method", name, v)
					}
				}
			}
		}
	}
	return out, nil
}

// standard reports whether name is one of client_golang's own metrics (the
// Go runtime and process collectors, the /metrics handler's errors).
func standard(name string) bool {
	for _, p := range []string{"go_", "process_", "promhttp_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// exactStatus is an HTTP status (or 0 for a response that had none).
var exactStatus = regexp.MustCompile(`^(0|[1-5][0-9][0-9])$`)

// Undocumented returns the metrics of body starting with prefix that doc
// (docs/operations.md) does not name in backquotes.
func Undocumented(body, doc, prefix string) ([]string, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	var out []string
	for name := range mfs {
		if strings.HasPrefix(name, prefix) && !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "`"+name+"{") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}
