package k8s

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// The services' configuration tables (envconfig.Table literals named Vars):
// the one list of what each service reads. A variable set in a manifest
// that is not in its service's table is a typo that silently leaves the
// default in force; a required one missing stops the pod.
var configSources = map[string]string{
	"authproxy": "../../authproxy/internal/config/config.go",
	"coreapi":   "../../coreapi/internal/config/vars.go",
}

// Variables the Go runtime reads.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// serviceVars reads each service's table from its source (the deploy module
// cannot import the services' internal packages).
func serviceVars(t *testing.T) map[string]envconfig.Table {
	t.Helper()
	out := map[string]envconfig.Table{}
	for svc, file := range configSources {
		table, err := parseTable(file)
		if err != nil {
			t.Fatalf("%s configuration table: %v", svc, err)
		}
		for _, must := range []string{"NATS_URL", "TOKEN_ISSUER", "LOG_LEVEL"} {
			if _, ok := table.Lookup(must); !ok {
				t.Fatalf("%s: found no %s in %s; the extraction is broken", svc, must, file)
			}
		}
		out[svc] = table
	}
	return out
}

// parseTable reads the composite literal `var Vars = envconfig.Table{...}`:
// the string fields Name, Default, DefaultDoc, OneOf, the bool Required and
// the string list Commands of each entry.
func parseTable(file string) (envconfig.Table, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return nil, err
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			if len(vs.Names) != 1 || vs.Names[0].Name != "Vars" || len(vs.Values) != 1 {
				continue
			}
			// append(envconfig.Table{...}, tracing.Vars("svc")...): the
			// shared OTEL_* entries are taken from the tracing package.
			var more envconfig.Table
			value := vs.Values[0]
			if call, ok := value.(*ast.CallExpr); ok && fmt.Sprint(call.Fun) == "append" && len(call.Args) == 2 && call.Ellipsis.IsValid() {
				inner, ok := call.Args[1].(*ast.CallExpr)
				if sel, isSel := inner.Fun.(*ast.SelectorExpr); !ok || !isSel || fmt.Sprint(sel.X) != "tracing" || sel.Sel.Name != "Vars" || len(inner.Args) != 1 {
					return nil, fmt.Errorf("Vars appends something other than tracing.Vars(service)")
				}
				svc, err := stringLit(inner.Args[0])
				if err != nil {
					return nil, err
				}
				more, value = tracing.Vars(svc), call.Args[0]
			}
			lit, ok := value.(*ast.CompositeLit)
			if !ok {
				return nil, fmt.Errorf("Vars is not a literal")
			}
			var table envconfig.Table
			for _, el := range lit.Elts {
				entry, ok := el.(*ast.CompositeLit)
				if !ok {
					return nil, fmt.Errorf("an entry of Vars is not a literal")
				}
				var v envconfig.Var
				for _, field := range entry.Elts {
					kv, ok := field.(*ast.KeyValueExpr)
					if !ok {
						return nil, fmt.Errorf("an entry of Vars has unkeyed fields")
					}
					switch key := kv.Key.(*ast.Ident).Name; key {
					case "Name", "OneOf":
						s, err := stringLit(kv.Value)
						if err != nil {
							return nil, fmt.Errorf("%s: %w", key, err)
						}
						if key == "Name" {
							v.Name = s
						} else {
							v.OneOf = s
						}
					case "Default":
						// A literal (authproxy's); coreapi's name constants
						// are left empty.
						if s, err := stringLit(kv.Value); err == nil {
							v.Default = s
						}
					case "Required":
						v.Required = fmt.Sprint(kv.Value) == "true"
					case "Commands":
						cl, ok := kv.Value.(*ast.CompositeLit)
						if !ok {
							return nil, fmt.Errorf("Commands is not a literal")
						}
						for _, c := range cl.Elts {
							s, err := stringLit(c)
							if err != nil {
								return nil, err
							}
							v.Commands = append(v.Commands, s)
						}
					}
				}
				if v.Name == "" {
					return nil, fmt.Errorf("an entry of Vars has no literal Name")
				}
				table = append(table, v)
			}
			return append(table, more...), nil
		}
	}
	return nil, fmt.Errorf("no var Vars in %s", file)
}

func stringLit(e ast.Expr) (string, error) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", fmt.Errorf("not a string literal")
	}
	return strconv.Unquote(bl.Value)
}

func reads(vars map[string]envconfig.Table, svc, name string) bool {
	return readsIn(vars, svc, "serve", name)
}

// readsIn reports whether svc's command reads name.
func readsIn(vars map[string]envconfig.Table, svc, cmd, name string) bool {
	if slices.Contains(runtimeVars, name) {
		return true
	}
	v, ok := vars[svc].Lookup(name)
	return ok && v.ReadBy(cmd)
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

// unknownVars lists every variable set on a container, init containers
// included (literal, from a Secret, or from a ConfigMap), that the command
// the container runs does not read. A ConfigMap key is fine if any container
// that loads the ConfigMap reads it.
func unknownVars(b *bundle, vars map[string]envconfig.Table) []string {
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
		for _, c := range allContainers(pod) {
			svc := serviceOf(c)
			if svc == "" {
				v = append(v, fmt.Sprintf("container %s: image %s runs neither service", c.Name, c.Image))
				continue
			}
			cmd := commandOf(c)
			for _, e := range c.Env {
				if !readsIn(vars, svc, cmd, e.Name) {
					v = append(v, fmt.Sprintf("container %s: %s sets %s, which %s %s does not read", c.Name, c.Image, e.Name, svc, cmd))
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
	t.Run("a variable the migration does not read is caught", func(t *testing.T) {
		b := base.deepCopy()
		c := initCtr(t, b, "migrate")
		c.Env = append(c.Env, corev1.EnvVar{Name: "SIGNING_KEYS_DIR", Value: "/keys"})
		if got := unknownVars(b, vars); len(got) != 1 || !strings.Contains(got[0], "SIGNING_KEYS_DIR, which coreapi migrate does not read") {
			t.Fatalf("unknownVars = %q, want one about SIGNING_KEYS_DIR", got)
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
		for _, v := range vars {
			if !strings.Contains(string(doc), "`"+v.Name+"`") {
				t.Errorf("docs/operations.md does not document %s's %s", svc, v.Name)
			}
		}
	}
}

// commandOf is the service command a container runs (serve by default).
func commandOf(c *corev1.Container) string {
	if len(c.Args) > 0 && !strings.HasPrefix(c.Args[0], "-") {
		return c.Args[0]
	}
	return "serve"
}

// missingRequired lists the required variables (and the one-of groups with
// none set) of every container's service and command that the container
// does not set, literally or through a ConfigMap.
func missingRequired(b *bundle, vars map[string]envconfig.Table) []string {
	cms := map[string]map[string]string{}
	for _, cm := range b.ConfigMaps {
		cms[cm.Name] = cm.Data
	}
	var out []string
	check := func(owner string, c *corev1.Container) {
		svc := serviceOf(c)
		if svc == "" {
			return
		}
		set := map[string]bool{}
		for _, e := range c.Env {
			set[e.Name] = true
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				for k := range cms[ef.ConfigMapRef.Name] {
					set[k] = true
				}
			}
		}
		cmd := commandOf(c)
		groups := map[string]bool{}
		for _, v := range vars[svc] {
			if !v.ReadBy(cmd) {
				continue
			}
			if v.Required && !set[v.Name] {
				out = append(out, fmt.Sprintf("%s container %s (%s %s) does not set the required %s", owner, c.Name, svc, cmd, v.Name))
			}
			if v.OneOf != "" {
				groups[v.OneOf] = groups[v.OneOf] || set[v.Name]
			}
		}
		for g, ok := range groups {
			if !ok {
				out = append(out, fmt.Sprintf("%s container %s (%s %s) sets none of the %s", owner, c.Name, svc, cmd, g))
			}
		}
	}
	for _, d := range b.Deployments {
		for _, c := range allContainers(&d.Spec.Template.Spec) {
			check(d.Name, c)
		}
	}
	for _, j := range b.Jobs {
		for _, c := range allContainers(&j.Spec.Template.Spec) {
			check(j.Name, c)
		}
	}
	return out
}

// TestManifestsSetRequiredVariables: every container sets what its
// service's table marks required for the command it runs.
func TestManifestsSetRequiredVariables(t *testing.T) {
	vars := serviceVars(t)
	for name, b := range map[string]*bundle{"base": renderBase(t), "app-sidecar": renderSidecar(t)} {
		for _, m := range missingRequired(b, vars) {
			t.Errorf("%s: %s", name, m)
		}
	}

	base := renderBase(t)
	t.Run("the migration's DATABASE_URL is required", func(t *testing.T) {
		b := base.deepCopy()
		c := initCtr(t, b, "migrate")
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "DATABASE_URL") })
		if got := missingRequired(b, vars); len(got) != 1 || !strings.Contains(got[0], "(coreapi migrate) sets none of the database URLs") {
			t.Fatalf("missingRequired = %q", got)
		}
	})
	t.Run("the proxy's core keys are required", func(t *testing.T) {
		b := base.deepCopy()
		c := ctr(t, b, proxyName)
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "IDENTITY_") })
		if got := missingRequired(b, vars); len(got) != 1 || !strings.Contains(got[0], "sets none of the core keys") {
			t.Fatalf("missingRequired = %q", got)
		}
	})
}

func initCtr(t *testing.T, b *bundle, name string) *corev1.Container {
	t.Helper()
	for _, d := range b.Deployments {
		for i := range d.Spec.Template.Spec.InitContainers {
			if c := &d.Spec.Template.Spec.InitContainers[i]; c.Name == name {
				return c
			}
		}
	}
	t.Fatalf("no init container %s", name)
	return nil
}
