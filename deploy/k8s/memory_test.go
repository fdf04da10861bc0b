package k8s

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
)

// measuredProxyRSS is the RSS of an authproxy at the default CACHE_MEMORY_MB
// and the base's GOMEMLIMIT with both caches full and 10,000 keep-alive
// connections open: the highest measurement so far, `go run ./deploy/loadtest
// -rss-users 160000 -held-conns 10000 -proxy-gomemlimit 640MiB` (675 MiB,
// with 36,126 evictions on the way: docs/scaling.md, "Memory per proxy"),
// above `make bench`'s concurrency row (608-650 MiB).
var measuredProxyRSS = resource.MustParse("675Mi")

// checkProxyMemory: the authproxy container's memory limit covers the
// measured RSS with at least 10 % headroom and, on top of it, the request
// bodies the proxy may buffer at once (BODY_MEMORY_MB: the measurement
// held none; docs/scaling.md), its request equals the limit (no overcommit
// of a cache that fills), GOMEMLIMIT is set below the limit, and the cache
// budget is the default the measurement was made at. env is what the
// container sees (envOf).
func checkProxyMemory(c *corev1.Container, env func(string) string) error {
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return fmt.Errorf("authproxy: no memory limit")
	}
	if lim.Value() < measuredProxyRSS.Value()*11/10 {
		return fmt.Errorf("authproxy: memory limit %s is below the measured RSS %s + 10 %%", lim.String(), measuredProxyRSS.String())
	}
	body, err := mib(env, "BODY_MEMORY_MB")
	if err != nil {
		return fmt.Errorf("authproxy: %v", err)
	}
	if need := measuredProxyRSS.Value() + body<<20; lim.Value() < need {
		return fmt.Errorf("authproxy: memory limit %s is below the measured RSS %s + BODY_MEMORY_MB (%d MiB)", lim.String(), measuredProxyRSS.String(), body)
	}
	if req := c.Resources.Requests[corev1.ResourceMemory]; req.Cmp(lim) != 0 {
		return fmt.Errorf("authproxy: memory request %s differs from the limit %s", req.String(), lim.String())
	}
	var gml string
	for _, e := range c.Env {
		switch e.Name {
		case "GOMEMLIMIT":
			gml = e.Value
		case "CACHE_MEMORY_MB", "TOKEN_CACHE_SIZE", "PROJECTION_CACHE_SIZE":
			return fmt.Errorf("authproxy: %s set: the memory limit was measured at the default cache budget; measure again", e.Name)
		}
	}
	if len(gml) < 4 || gml[len(gml)-3:] != "MiB" {
		return fmt.Errorf("authproxy: GOMEMLIMIT %q, want a value in MiB", gml)
	}
	q, err := resource.ParseQuantity(gml[:len(gml)-3] + "Mi")
	if err != nil {
		return fmt.Errorf("authproxy: GOMEMLIMIT %q: %v", gml, err)
	}
	if q.Cmp(lim) >= 0 || q.Value() < lim.Value()*8/10 {
		return fmt.Errorf("authproxy: GOMEMLIMIT %s, want 80-100 %% of the limit %s", gml, lim.String())
	}
	return nil
}

// mib reads a MiB count (CACHE_MEMORY_MB, BODY_MEMORY_MB) as the container
// sees it, the proxy's default when unset.
func mib(env func(string) string, name string) (int64, error) {
	v := env(name)
	if v == "" {
		v = authproxyDefault(name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s %q: want a number of MiB", name, v)
	}
	return n, nil
}

var authproxyTable = sync.OnceValues(func() (envconfig.Table, error) { return parseTable(configSources["authproxy"]) })

// authproxyDefault is the default of the proxy's variable name, from its
// configuration table.
func authproxyDefault(name string) string {
	table, err := authproxyTable()
	if err != nil {
		panic(err)
	}
	v, ok := table.Lookup(name)
	if !ok || v.Default == "" {
		panic("authproxy's table has no default for " + name)
	}
	return v.Default
}

// envOf is the environment container c of b sees: its env, over the
// ConfigMaps it takes with envFrom.
func envOf(b *bundle, c *corev1.Container) func(string) string {
	return func(name string) string {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
		v := ""
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef == nil {
				continue
			}
			for _, cm := range b.ConfigMaps {
				if cm.Name == from.ConfigMapRef.Name {
					if x, ok := cm.Data[name]; ok {
						v = x // the last source wins
					}
				}
			}
		}
		return v
	}
}

func TestProxyMemoryMatchesMeasurement(t *testing.T) {
	b := renderBase(t)
	c := ctr(t, b, proxyName)
	if err := checkProxyMemory(c, envOf(b, c)); err != nil {
		t.Fatal(err)
	}
	for cm := range b.ConfigMaps {
		for _, k := range []string{"CACHE_MEMORY_MB", "TOKEN_CACHE_SIZE", "PROJECTION_CACHE_SIZE"} {
			if _, ok := b.ConfigMaps[cm].Data[k]; ok {
				t.Errorf("ConfigMap %s sets %s: the memory limit was measured at the default cache budget", b.ConfigMaps[cm].Name, k)
			}
		}
	}
}

func TestProxyMemoryBreakageIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(c *corev1.Container)
	}{
		{"the old 256Mi limit", func(c *corev1.Container) {
			c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("256Mi")
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}},
		{"request below the limit", func(c *corev1.Container) {
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}},
		{"no GOMEMLIMIT", func(c *corev1.Container) {
			for i := range c.Env {
				if c.Env[i].Name == "GOMEMLIMIT" {
					c.Env = append(c.Env[:i], c.Env[i+1:]...)
					break
				}
			}
		}},
		{"GOMEMLIMIT above the limit", func(c *corev1.Container) { setEnv(c, "GOMEMLIMIT", "800MiB") }},
		{"GOMEMLIMIT far below the limit", func(c *corev1.Container) { setEnv(c, "GOMEMLIMIT", "230MiB") }},
		{"GOMEMLIMIT garbled", func(c *corev1.Container) { setEnv(c, "GOMEMLIMIT", "lotsMiB") }},
		{"a larger cache budget", func(c *corev1.Container) { setEnv(c, "CACHE_MEMORY_MB", "1024") }},
		{"an explicit cache size", func(c *corev1.Container) { setEnv(c, "TOKEN_CACHE_SIZE", "400000") }},
		{"a body budget the limit does not cover", func(c *corev1.Container) { setEnv(c, "BODY_MEMORY_MB", "256") }},
		{"a garbled body budget", func(c *corev1.Container) { setEnv(c, "BODY_MEMORY_MB", "lots") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := renderBase(t)
			c := ctr(t, b, proxyName)
			tc.break_(c)
			if err := checkProxyMemory(c, envOf(b, c)); err == nil {
				t.Fatal("not caught")
			}
		})
	}
	// Set in the ConfigMap both containers take.
	b := renderBase(t)
	b.ConfigMaps[0].Data["BODY_MEMORY_MB"] = "256"
	c := ctr(t, b, proxyName)
	if err := checkProxyMemory(c, envOf(b, c)); err == nil {
		t.Fatal("BODY_MEMORY_MB in the ConfigMap not caught")
	}
}

// sidecarFits: an authproxy sidecar with a memory limit below the base's
// sets a CACHE_MEMORY_MB whose full caches, with users churning (RSS ≈ 20
// MiB + 2 × budget, docs/scaling.md "Memory per proxy"), and the request
// bodies it may buffer at once (BODY_MEMORY_MB) leave at least 20 % of the
// limit for connections (16 KiB each).
func sidecarFits(c *corev1.Container, env func(string) string) error {
	lim := c.Resources.Limits[corev1.ResourceMemory]
	cache, err := mib(env, "CACHE_MEMORY_MB")
	if err != nil {
		return fmt.Errorf("sidecar: %v", err)
	}
	body, err := mib(env, "BODY_MEMORY_MB")
	if err != nil {
		return fmt.Errorf("sidecar: %v", err)
	}
	if need := (20 + 2*cache + body) << 20; need > lim.Value()*8/10 {
		return fmt.Errorf("sidecar: CACHE_MEMORY_MB=%d fills to ≈ %d MiB with BODY_MEMORY_MB=%d, more than 80 %% of the limit %s", cache, need>>20, body, lim.String())
	}
	return nil
}

func TestSidecarMemoryFitsCacheBudget(t *testing.T) {
	b := renderSidecar(t)
	c := sidecarOf(t, b)
	env := envOf(b, c)
	if err := sidecarFits(c, env); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{
		"CACHE_MEMORY_MB": "256", // the default
		"BODY_MEMORY_MB":  "64",  // the default
	} {
		c := c.DeepCopy()
		setEnv(c, name, value)
		if sidecarFits(c, envOf(b, c)) == nil {
			t.Errorf("%s=%s in a 256Mi sidecar not caught", name, value)
		}
	}
	// The budget the overlay had, 96 MiB: full caches alone (212 MiB) left
	// too little of 256Mi, and with the default body budget went past it.
	c96 := c.DeepCopy()
	setEnv(c96, "CACHE_MEMORY_MB", "96")
	if sidecarFits(c96, envOf(b, c96)) == nil {
		t.Error("CACHE_MEMORY_MB=96 in a 256Mi sidecar not caught")
	}
	setEnv(c, "CACHE_MEMORY_MB", "ninety")
	if sidecarFits(c, envOf(b, c)) == nil {
		t.Fatal("a garbled budget not caught")
	}
}

// measuredCoreRSS is the peak RSS (VmHWM) of a coreapi under its worst
// memory cases at once, at the base's GOMEMLIMIT and GOMAXPROCS and the
// default MAX_BODY_BYTES: 512 sign-ins waiting for their argon2id hash
// (GOMAXPROCS at a time), 16 readers of the largest member page, 64
// uploads of MAX_BODY_BYTES (one proxy's BODY_MEMORY_MB), sign-ups and
// role changes keeping the mail sender and the outbox relay busy, and
// 2,000 idle keep-alive connections: the highest of the runs of `go run
// ./deploy/loadtest -core-rss -core-gomemlimit 576MiB` (531-567 MiB,
// docs/scaling.md, "Memory per coreapi").
var measuredCoreRSS = resource.MustParse("567Mi")

// The settings measuredCoreRSS was measured at: the hashes at once and
// the pool follow GOMAXPROCS, the uploads MAX_BODY_BYTES, and the garbage
// the runtime keeps GOMEMLIMIT.
const (
	measuredCoreProcs    = "2"
	measuredCoreMaxBody  = "1048576"
	measuredCoreMemLimit = "576MiB"
)

// checkCoreMemory: the coreapi container's memory limit covers the
// measured RSS with at least 10 % headroom, its request equals the limit,
// GOMEMLIMIT is set below the limit, and GOMAXPROCS, MAX_BODY_BYTES and
// GOMEMLIMIT are those the measurement was made at. env is what the
// container sees (envOf).
func checkCoreMemory(c *corev1.Container, env func(string) string) error {
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return fmt.Errorf("coreapi: no memory limit")
	}
	if lim.Value() < measuredCoreRSS.Value()*11/10 {
		return fmt.Errorf("coreapi: memory limit %s is below the measured RSS %s + 10 %%", lim.String(), measuredCoreRSS.String())
	}
	if req := c.Resources.Requests[corev1.ResourceMemory]; req.Cmp(lim) != 0 {
		return fmt.Errorf("coreapi: memory request %s differs from the limit %s", req.String(), lim.String())
	}
	gml := env("GOMEMLIMIT")
	if len(gml) < 4 || gml[len(gml)-3:] != "MiB" {
		return fmt.Errorf("coreapi: GOMEMLIMIT %q, want a value in MiB", gml)
	}
	q, err := resource.ParseQuantity(gml[:len(gml)-3] + "Mi")
	if err != nil {
		return fmt.Errorf("coreapi: GOMEMLIMIT %q: %v", gml, err)
	}
	if q.Cmp(lim) >= 0 {
		return fmt.Errorf("coreapi: GOMEMLIMIT %s is not below the limit %s", gml, lim.String())
	}
	for name, want := range map[string]string{"GOMEMLIMIT": measuredCoreMemLimit, "GOMAXPROCS": measuredCoreProcs, "MAX_BODY_BYTES": measuredCoreMaxBody} {
		if got := env(name); got != want {
			return fmt.Errorf("coreapi: %s %q: the memory limit was measured at %s; measure again (go run ./deploy/loadtest -core-rss)", name, got, want)
		}
	}
	return nil
}

func TestCoreMemoryMatchesMeasurement(t *testing.T) {
	b := renderBase(t)
	c := ctr(t, b, coreName)
	if err := checkCoreMemory(c, envOf(b, c)); err != nil {
		t.Fatal(err)
	}
}

func TestCoreMemoryBreakageIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(c *corev1.Container)
		want   string
	}{
		{"a limit the measurement does not fit in with 10 %", func(c *corev1.Container) {
			lim := resource.NewQuantity(measuredCoreRSS.Value()*105/100, resource.BinarySI)
			c.Resources.Limits[corev1.ResourceMemory] = *lim
			c.Resources.Requests[corev1.ResourceMemory] = *lim
		}, "below the measured RSS"},
		{"no limit", func(c *corev1.Container) { delete(c.Resources.Limits, corev1.ResourceMemory) }, "no memory limit"},
		{"request below the limit", func(c *corev1.Container) {
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}, "differs from the limit"},
		{"no GOMEMLIMIT", func(c *corev1.Container) {
			for i := range c.Env {
				if c.Env[i].Name == "GOMEMLIMIT" {
					c.Env = append(c.Env[:i], c.Env[i+1:]...)
					break
				}
			}
		}, "want a value in MiB"},
		{"GOMEMLIMIT at the limit", func(c *corev1.Container) {
			lim := c.Resources.Limits[corev1.ResourceMemory]
			setEnv(c, "GOMEMLIMIT", fmt.Sprintf("%dMiB", lim.Value()>>20))
		}, "not below the limit"},
		{"GOMEMLIMIT garbled", func(c *corev1.Container) { setEnv(c, "GOMEMLIMIT", "lotsMiB") }, "GOMEMLIMIT"},
		{"another GOMEMLIMIT than measured", func(c *corev1.Container) { setEnv(c, "GOMEMLIMIT", "500MiB") }, "measure again"},
		{"more Ps than measured", func(c *corev1.Container) { setEnv(c, "GOMAXPROCS", "4") }, "GOMAXPROCS"},
		{"a larger body limit", func(c *corev1.Container) { setEnv(c, "MAX_BODY_BYTES", "8388608") }, "MAX_BODY_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := renderBase(t)
			c := ctr(t, b, coreName)
			tc.break_(c)
			if err := checkCoreMemory(c, envOf(b, c)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	// Set in the ConfigMap both containers take.
	b := renderBase(t)
	b.ConfigMaps[0].Data["MAX_BODY_BYTES"] = "8388608"
	c := ctr(t, b, coreName)
	if err := checkCoreMemory(c, envOf(b, c)); err == nil {
		t.Fatal("MAX_BODY_BYTES in the ConfigMap not caught")
	}
}

// TestCoreRSSRunsAtTheBase: `go run ./deploy/loadtest -core-rss` without
// flags measures coreapi at the settings the base's limit was measured at,
// so that the command docs/scaling.md gives measures what the manifest
// runs.
func TestCoreRSSRunsAtTheBase(t *testing.T) {
	src, err := os.ReadFile("../loadtest/main.go")
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"core-gomemlimit": `"` + measuredCoreMemLimit + `"`, "core-gomaxprocs": measuredCoreProcs} {
		m := regexp.MustCompile(`"` + flag + `", ([^,]+),`).FindSubmatch(src)
		if m == nil {
			t.Errorf("loadtest: no -%s flag found", flag)
			continue
		}
		if got := string(m[1]); got != want {
			t.Errorf("loadtest: -%s defaults to %s, want the base's %s", flag, got, want)
		}
	}
}
