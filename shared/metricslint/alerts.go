package metricslint

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	yamlv2 "go.yaml.in/yaml/v2"

	"github.com/tollgate-auth/tollgate/shared/docblock"
)

// An AlertRule is one rule of a Prometheus rule file a doc suggests.
type AlertRule struct {
	Where string // the doc's block, file:line
	Alert string
	Expr  string
}

// ruleFile is Prometheus's rule file format (rulefmt), for a strict
// decode: a misspelt field is an error, not a rule Prometheus refuses.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Limit    int    `yaml:"limit"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// AlertRules returns the rules of the YAML blocks of the Markdown doc
// (named name in errors) that are rule files (their top level is groups:).
func AlertRules(name, doc string) ([]AlertRule, error) {
	blocks, err := docblock.Parse(name, doc)
	if err != nil {
		return nil, err
	}
	var out []AlertRule
	for _, b := range docblock.Lang(blocks, "yaml") {
		if !strings.HasPrefix(b.Text, "groups:") {
			continue
		}
		var f ruleFile
		if err := yamlv2.UnmarshalStrict([]byte(b.Text), &f); err != nil {
			return nil, fmt.Errorf("%s: %w", b.Where(), err)
		}
		for _, g := range f.Groups {
			for i, r := range g.Rules {
				if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
					return nil, fmt.Errorf("%s: group %s, rule %d: want an alert and an expr", b.Where(), g.Name, i+1)
				}
				out = append(out, AlertRule{Where: b.Where(), Alert: r.Alert, Expr: r.Expr})
			}
		}
	}
	return out, nil
}

// AlertProblems lists what the rules' expressions query of the metrics of
// prefix that has no series: a metric m (Dead's report of the service's
// code) does not define, one queried under a name its type does not export
// (a histogram through its _bucket, _count or _sum series; the type of a
// NewDesc metric is the doc table's, tables), or a label (in a matcher or
// a by clause) the doc's table does not give it. Such an alert never fires.
func AlertProblems(rules []AlertRule, prefix string, m map[string]*Metric, tables map[string]TableRow) []string {
	name := regexp.MustCompile(`\b(` + regexp.QuoteMeta(prefix) + `[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	by := regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	var out []string
	for _, r := range rules {
		if !strings.Contains(r.Expr, prefix) {
			continue // another service's alert
		}
		report := func(format string, args ...any) {
			out = append(out, fmt.Sprintf("%s: alert %s ", r.Where, r.Alert)+fmt.Sprintf(format, args...))
		}
		var labels []string // every label of the metrics queried
		for _, q := range name.FindAllStringSubmatch(r.Expr, -1) {
			base, ok := series(q[1], m, tables)
			switch {
			case !ok && m[base] != nil:
				report("queries %s, a series %s does not export (a histogram's are _bucket, _count and _sum)", q[1], base)
				continue
			case !ok:
				report("queries %s, which no metric of the code exports", q[1])
				continue
			}
			have := tables[base].Labels
			if base != q[1] && strings.HasSuffix(q[1], "_bucket") {
				have = append(have, "le")
			}
			labels = append(labels, have...)
			for _, l := range matcher.FindAllStringSubmatch(q[2], -1) {
				if !slices.Contains(have, l[1]) {
					report("matches %s on the label %s, which docs/operations.md does not give it", q[1], l[1])
				}
			}
		}
		for _, b := range by.FindAllStringSubmatch(r.Expr, -1) {
			for _, l := range strings.Split(b[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(labels, l) {
					report("groups by %s, a label of none of the metrics it queries", l)
				}
			}
		}
	}
	return out
}

// series returns the metric a series name n belongs to, and whether that
// metric exports it.
func series(n string, m map[string]*Metric, tables map[string]TableRow) (string, bool) {
	kind := func(name string) string {
		d := m[name]
		switch {
		case d == nil:
			return ""
		case d.Kind != "NewDesc":
			return d.Kind
		case tables[name].Type == "histogram":
			return "NewHistogram"
		case tables[name].Type == "summary":
			return "NewSummary"
		}
		return "NewDesc"
	}
	if k := kind(n); k != "" {
		return n, !strings.Contains(k, "Histogram")
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(n, suffix); ok {
			k := kind(base)
			return base, strings.Contains(k, "Histogram") || strings.Contains(k, "Summary") && suffix != "_bucket"
		}
	}
	return n, false
}

// A TableRow is what a row of the "## Metrics" tables of
// docs/operations.md says of a metric: its labels and its type.
type TableRow struct {
	Labels []string
	Type   string // counter, gauge, histogram
}

// TableRows reads the rows of the "## Metrics" section of doc naming
// metrics of prefix ("| `name{a,b}`, `other` | type | ...").
func TableRows(doc, prefix string) map[string]TableRow {
	out := map[string]TableRow{}
	start := strings.Index(doc, "\n## Metrics\n")
	if start < 0 {
		return out
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	name := regexp.MustCompile("`(" + regexp.QuoteMeta(prefix) + "[a-z0-9_]+)(?:\\{([a-z_,]*)\\})?`")
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			row := TableRow{Type: strings.TrimSpace(cells[2])}
			if m[2] != "" {
				row.Labels = strings.Split(m[2], ",")
			}
			out[m[1]] = row
		}
	}
	return out
}

// CheckAlerts fails t when a suggested alert of the operations doc
// (docPath) queries a metric of prefix that the Go code under root (a
// service's module) does not export, or a label the doc's table does not
// give it (AlertProblems), or when fewer than min of its
// expressions name one (a broken parse).
func CheckAlerts(t testing.TB, docPath, prefix, root string, min int) {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := AlertRules(docPath, string(doc))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		if bytes.Contains([]byte(r.Expr), []byte(prefix)) {
			n++
		}
	}
	if n < min {
		t.Fatalf("%d alerts of %s query %s metrics; the parse is broken", n, docPath, prefix)
	}
	report, err := Dead(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range AlertProblems(rules, prefix, report.Metrics, TableRows(string(doc), prefix)) {
		t.Error(p)
	}
}
