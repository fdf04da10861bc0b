package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMakeHelpListsEveryTarget: `make help` names every target the
// Makefile declares phony (but the default, all), with what it does, and
// each declared target has a rule: `make test-short` was declared, had
// none and did nothing, successfully; `make help` did not exist.
func TestMakeHelpListsEveryTarget(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	phony := regexp.MustCompile(`(?m)^\.PHONY:(.*)$`).FindStringSubmatch(string(b))
	if phony == nil {
		t.Fatal("Makefile declares no .PHONY targets")
	}
	cmd := exec.Command("make", "-s", "--no-print-directory", "help")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	listed := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(line, "   ") {
			listed[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for _, target := range strings.Fields(phony[1]) {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).Match(b) {
			t.Errorf("target %s is declared phony but has no rule", target)
		}
		if target == "all" {
			continue
		}
		if listed[target] == "" {
			t.Errorf("make help does not list %s:\n%s", target, out)
		}
	}
}
