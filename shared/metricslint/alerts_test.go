package metricslint

import (
	"os"
	"regexp"
	"testing"
)

// TestAlertsNamedAreDefined: every alert docs/operations.md names (in the
// metrics table, the runbooks) has a rule in its suggested alerts, and
// every rule is named once.
func TestAlertsNamedAreDefined(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]int{}
	for _, m := range regexp.MustCompile(`- alert: (Tollgate\w+)`).FindAllSubmatch(b, -1) {
		defined[string(m[1])]++
	}
	if len(defined) == 0 {
		t.Fatal("no alert rules found")
	}
	for name, n := range defined {
		if n > 1 {
			t.Errorf("alert %s has %d rules", name, n)
		}
	}
	for _, m := range regexp.MustCompile(`\bTollgate[A-Z]\w+`).FindAll(b, -1) {
		if defined[string(m)] == 0 {
			t.Errorf("docs/operations.md names the alert %s but defines no rule for it", m)
		}
	}
}
