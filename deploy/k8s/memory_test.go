package k8s

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// measuredProxyRSS is the RSS of an authproxy at the default CACHE_MEMORY_MB
// and the base's GOMEMLIMIT with both caches full and 10,000 keep-alive
// connections open: the highest measurement so far, `go run ./deploy/loadtest
// -rss-users 160000 -held-conns 10000 -proxy-gomemlimit 640MiB` (675 MiB,
// with 36,126 evictions on the way: docs/scaling.md, "Memory per proxy"),
// above `make bench`'s concurrency row (608-650 MiB).
var measuredProxyRSS = resource.MustParse("675Mi")

// checkProxyMemory: the authproxy container's memory limit covers the
// measured RSS with at least 10 % headroom, its request equals the limit
// (no overcommit of a cache that fills), GOMEMLIMIT is set below the limit,
// and the cache budget is the default the measurement was made at.
func checkProxyMemory(c *corev1.Container) error {
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return fmt.Errorf("authproxy: no memory limit")
	}
	if lim.Value() < measuredProxyRSS.Value()*11/10 {
		return fmt.Errorf("authproxy: memory limit %s is below the measured RSS %s + 10 %%", lim.String(), measuredProxyRSS.String())
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

func TestProxyMemoryMatchesMeasurement(t *testing.T) {
	b := renderBase(t)
	if err := checkProxyMemory(ctr(t, b, proxyName)); err != nil {
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := renderBase(t)
			c := ctr(t, b, proxyName)
			tc.break_(c)
			if err := checkProxyMemory(c); err == nil {
				t.Fatal("not caught")
			}
		})
	}
}

// sidecarFits: an authproxy sidecar with a memory limit below the base's
// sets a CACHE_MEMORY_MB whose full caches (RSS ≈ 22 MiB + 1.5 × budget,
// measured) leave at least 20 % of the limit for connections.
func sidecarFits(c *corev1.Container) error {
	lim := c.Resources.Limits[corev1.ResourceMemory]
	mb := int64(256)
	for _, e := range c.Env {
		if e.Name == "CACHE_MEMORY_MB" {
			if _, err := fmt.Sscanf(e.Value, "%d", &mb); err != nil {
				return fmt.Errorf("sidecar: CACHE_MEMORY_MB %q: %v", e.Value, err)
			}
		}
	}
	if need := (22 + mb*3/2) << 20; need > lim.Value()*8/10 {
		return fmt.Errorf("sidecar: CACHE_MEMORY_MB=%d fills to ≈ %d MiB, more than 80 %% of the limit %s", mb, need>>20, lim.String())
	}
	return nil
}

func TestSidecarMemoryFitsCacheBudget(t *testing.T) {
	b := renderSidecar(t)
	c := sidecarOf(t, b)
	if err := sidecarFits(c); err != nil {
		t.Fatal(err)
	}
	setEnv(c, "CACHE_MEMORY_MB", "256") // the default
	if sidecarFits(c) == nil {
		t.Fatal("the default budget in a 256Mi sidecar not caught")
	}
	setEnv(c, "CACHE_MEMORY_MB", "ninety")
	if sidecarFits(c) == nil {
		t.Fatal("a garbled budget not caught")
	}
}
