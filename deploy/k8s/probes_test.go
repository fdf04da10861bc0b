package k8s

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// coreReadyTimeout is readyTimeout, the bound coreapi's /readyz gives its
// database steps before it answers 503, read from the source of its
// httpapi package (the deploy module cannot import it).
var coreReadyTimeout = sync.OnceValues(func() (time.Duration, error) {
	return durationConst("../../coreapi/internal/httpapi/admin.go", "readyTimeout")
})

// checkCoreReadyTimeout: the kubelet counts a probe not answered within
// its timeoutSeconds (1 s unset) as failed. coreapi's /readyz waits up to
// readyTimeout for its database (the ping, the read-only check, the
// schema's version) and then answers 503 naming what failed. A probe that
// gives up first turns a database answering in between, through which
// requests (25 s each) are still served, into every replica leaving the
// Service at once, and a load peak or a reconnection of the probe's
// connection into readiness that comes and goes, with no reason shown.
func checkCoreReadyTimeout(v *violations, c *corev1.Container) {
	p := c.ReadinessProbe
	if p == nil {
		return // reported as a missing probe
	}
	bound, err := coreReadyTimeout()
	if err != nil {
		v.addf("coreapi: /readyz's bound on its database steps: %v", err)
		return
	}
	if timeout := probeTimeout(p); timeout <= bound {
		v.addf("coreapi: readiness probe gives up after %s, before /readyz's own bound on its database steps (%s): a database that answers in between takes every replica out of the Service (set timeoutSeconds above it)", timeout, bound)
	}
}

// probeTimeout is how long the kubelet waits for p's answer: its
// timeoutSeconds, 1 s unset.
func probeTimeout(p *corev1.Probe) time.Duration {
	return time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
}

// durationConst reads the constant name of the Go file, a time.Duration
// written as a product of integer literals and time's units.
func durationConst(file, name string) (time.Duration, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return 0, err
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name != name || i >= len(vs.Values) {
					continue
				}
				d, err := evalDuration(vs.Values[i])
				if err != nil {
					return 0, fmt.Errorf("%s: const %s: %w", file, name, err)
				}
				return d, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no const %s", file, name)
}

var timeUnits = map[string]time.Duration{
	"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
	"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
}

// evalDuration evaluates products of integer literals and time's units.
func evalDuration(e ast.Expr) (time.Duration, error) {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return evalDuration(e.X)
	case *ast.BasicLit:
		if e.Kind != token.INT {
			return 0, fmt.Errorf("literal %s is not an integer", e.Value)
		}
		n, err := strconv.ParseInt(e.Value, 0, 64)
		return time.Duration(n), err
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok && pkg.Name == "time" {
			if u, ok := timeUnits[e.Sel.Name]; ok {
				return u, nil
			}
		}
		return 0, fmt.Errorf("%s.%s is not a unit of time", e.X, e.Sel.Name)
	case *ast.BinaryExpr:
		if e.Op != token.MUL {
			return 0, fmt.Errorf("operator %s, want products only", e.Op)
		}
		x, err := evalDuration(e.X)
		if err != nil {
			return 0, err
		}
		y, err := evalDuration(e.Y)
		return x * y, err
	}
	return 0, errors.New("not a product of integers and time's units")
}

func TestEvalDuration(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want time.Duration
		ok   bool
	}{
		{"2 * time.Second", 2 * time.Second, true},
		{"time.Second * 2", 2 * time.Second, true},
		{"1500 * time.Millisecond", 1500 * time.Millisecond, true},
		{"(3 * time.Second)", 3 * time.Second, true},
		{"time.Minute", time.Minute, true},
		{"2 + time.Second", 0, false},
		{"2.5 * time.Second", 0, false},
		{"2 * other.Second", 0, false},
		{"timeout", 0, false},
	} {
		e, err := parser.ParseExpr(tc.src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalDuration(e)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("evalDuration(%s) = %v, %v; want %v, ok %v", tc.src, got, err, tc.want, tc.ok)
		}
	}
}

// TestCoreReadyTimeoutRead: the bound is found in coreapi's source (a
// rename there must not leave the check reading nothing).
func TestCoreReadyTimeoutRead(t *testing.T) {
	d, err := coreReadyTimeout()
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 || d > 30*time.Second {
		t.Fatalf("readyTimeout = %v, want a bound of seconds", d)
	}
}
