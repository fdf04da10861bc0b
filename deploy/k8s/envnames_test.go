package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The services' configuration loaders: every variable a service reads is a
// string literal there. A variable set in a manifest that no loader reads is
// a typo that silently leaves the default in force.
var configSources = map[string]string{
	"authproxy": "../../authproxy/internal/config/config.go",
	"coreapi":   "../../coreapi/internal/config/config.go",
}

// Variables the Go runtime reads.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// Per-provider OIDC variables are built at run time from OIDC_PROVIDERS.
var oidcVar = regexp.MustCompile(`^OIDC_[A-Z0-9_]+_(ISSUER|CLIENT_ID|CLIENT_SECRET|REDIRECT_URL|SCOPES)$`)

var envLiteral = regexp.MustCompile(`"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"`)

func serviceVars(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for svc, file := range configSources {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s configuration source: %v", svc, err)
		}
		vars := map[string]bool{}
		for _, m := range envLiteral.FindAllStringSubmatch(string(src), -1) {
			if slices.Contains([]string{"CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URL"}, m[1]) {
				continue // a suffix of a per-provider name, not a variable
			}
			vars[m[1]] = true
		}
		for _, must := range []string{"IDENTITY_HMAC_KEY_FILE", "NATS_URL", "TOKEN_ISSUER", "LOG_LEVEL"} {
			if !vars[must] {
				t.Fatalf("%s: found no %s in %s; the extraction is broken", svc, must, file)
			}
		}
		out[svc] = vars
	}
	return out
}

func reads(vars map[string]map[string]bool, svc, name string) bool {
	if slices.Contains(runtimeVars, name) {
		return true
	}
	if svc == "coreapi" && oidcVar.MatchString(name) {
		return true
	}
	return vars[svc][name]
}

// serviceOf maps a container to the service binary it runs.
func serviceOf(c *corev1.Container) string {
	switch {
	case strings.Contains(c.Image, "authproxy"):
		return "authproxy"
	case strings.Contains(c.Image, "coreapi"):
		return "coreapi"
	}
	return ""
}

// unknownVars lists every variable set on a container (literal, from a
// Secret, or from a ConfigMap) that the container's service does not read.
// A ConfigMap key is fine if any container that loads the ConfigMap reads it.
func unknownVars(b *bundle, vars map[string]map[string]bool) []string {
	var v []string
	var pods []*corev1.PodSpec
	for _, d := range b.Deployments {
		pods = append(pods, &d.Spec.Template.Spec)
	}
	for _, j := range b.Jobs {
		pods = append(pods, &j.Spec.Template.Spec)
	}
	cmReaders := map[string][]string{} // ConfigMap name → services loading it
	for _, pod := range pods {
		for i := range pod.Containers {
			c := &pod.Containers[i]
			svc := serviceOf(c)
			if svc == "" {
				v = append(v, fmt.Sprintf("container %s: image %s runs neither service", c.Name, c.Image))
				continue
			}
			for _, e := range c.Env {
				if !reads(vars, svc, e.Name) {
					v = append(v, fmt.Sprintf("container %s: %s sets %s, which %s does not read", c.Name, c.Image, e.Name, svc))
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					cmReaders[ef.ConfigMapRef.Name] = append(cmReaders[ef.ConfigMapRef.Name], svc)
				}
			}
		}
	}
	for _, cm := range b.ConfigMaps {
		for k := range cm.Data {
			used := false
			for _, svc := range cmReaders[cm.Name] {
				used = used || reads(vars, svc, k)
			}
			if !used {
				v = append(v, fmt.Sprintf("ConfigMap %s: %s is read by none of %v", cm.Name, k, cmReaders[cm.Name]))
			}
		}
	}
	return v
}

func TestManifestsSetOnlyKnownVariables(t *testing.T) {
	vars := serviceVars(t)
	base := renderBase(t)
	for _, v := range unknownVars(base, vars) {
		t.Error(v)
	}

	t.Run("a misspelt ConfigMap key is caught", func(t *testing.T) {
		b := base.deepCopy()
		b.ConfigMaps[0].Data["TOKEN_ISSUR"] = "https://x"
		if got := unknownVars(b, vars); len(got) != 1 || !strings.Contains(got[0], "TOKEN_ISSUR") {
			t.Fatalf("unknownVars = %q, want one about TOKEN_ISSUR", got)
		}
	})
	t.Run("a coreapi variable on the proxy is caught", func(t *testing.T) {
		b := base.deepCopy()
		c := ctr(t, b, proxyName)
		c.Env = append(c.Env, corev1.EnvVar{Name: "SIGNING_KEYS_DIR", Value: "/keys"})
		if got := unknownVars(b, vars); len(got) != 1 || !strings.Contains(got[0], "SIGNING_KEYS_DIR") {
			t.Fatalf("unknownVars = %q, want one about SIGNING_KEYS_DIR", got)
		}
	})
}

// TestOperationsDocListsEveryVariable keeps the configuration tables in
// docs/operations.md in step with what the services read.
func TestOperationsDocListsEveryVariable(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for svc, vars := range serviceVars(t) {
		for name := range vars {
			if !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("docs/operations.md does not document %s's %s", svc, name)
			}
		}
	}
}
