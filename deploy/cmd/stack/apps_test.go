package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestAppEnv: `make run` hands coreapi and the proxy the example's
// permission catalog, route table and app keys, unless the environment
// names the user's own, as the README's "Protect your own service" asks an
// adopter to do; those then reach the services (the last value of a
// variable wins, so an example's entry after the user's would replace it),
// a relative file name made absolute for services that run elsewhere.
func TestAppEnv(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	const perms, rules, keys = "/repo/permissions.yaml", "/repo/rules.yaml", "/data/app-notes.keys"
	for _, tc := range []struct {
		name  string
		env   map[string]string
		core  []string
		proxy []string
	}{
		{name: "the example's", env: nil,
			core:  []string{"PERMISSIONS_FILE=" + perms},
			proxy: []string{"RULES_FILE=" + rules, "UPSTREAM_KEYS_FILE=" + keys}},
		{name: "the user's files", env: map[string]string{"PERMISSIONS_FILE": "/mine/permissions.yaml", "RULES_FILE": "/mine/rules.yaml", "UPSTREAM_KEYS_FILE": "/mine/app.keys"},
			core:  []string{"PERMISSIONS_FILE=/mine/permissions.yaml"},
			proxy: []string{"RULES_FILE=/mine/rules.yaml", "UPSTREAM_KEYS_FILE=/mine/app.keys"}},
		{name: "relative names", env: map[string]string{"PERMISSIONS_FILE": "my-permissions.yaml", "RULES_FILE": "my-rules.yaml", "UPSTREAM_KEYS_FILE": "my-app.keys"},
			core:  []string{"PERMISSIONS_FILE=" + filepath.Join(wd, "my-permissions.yaml")},
			proxy: []string{"RULES_FILE=" + filepath.Join(wd, "my-rules.yaml"), "UPSTREAM_KEYS_FILE=" + filepath.Join(wd, "my-app.keys")}},
		// Values inherited from the environment: no file of the example
		// beside them (coreapi and the proxy refuse both at once).
		{name: "the user's values", env: map[string]string{"PERMISSIONS": "permissions: []", "UPSTREAM_KEYS": "my-app:c2VjcmV0"},
			core:  nil,
			proxy: []string{"RULES_FILE=" + rules}},
		{name: "rules only", env: map[string]string{"RULES_FILE": "/mine/rules.yaml"},
			core:  []string{"PERMISSIONS_FILE=" + perms},
			proxy: []string{"RULES_FILE=/mine/rules.yaml", "UPSTREAM_KEYS_FILE=" + keys}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, proxy, err := appEnv(func(k string) string { return tc.env[k] }, perms, rules, keys)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(core, tc.core) {
				t.Errorf("coreapi gets %q, want %q", core, tc.core)
			}
			if !slices.Equal(proxy, tc.proxy) {
				t.Errorf("the proxy gets %q, want %q", proxy, tc.proxy)
			}
		})
	}
}

// TestServiceDefaults: the issuer `make run` gives both services is the
// public URL its discovery documents name their endpoints under (RFC 8414
// section 3.3: a client refuses metadata whose issuer is not the URL it
// asked), the proxy's address with -proxy-addr elsewhere or the user's
// PUBLIC_BASE_URL; a TOKEN_ISSUER the user set is kept as set.
func TestServiceDefaults(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		proxyAddr string
		common    []string
		core      []string
	}{
		{name: "the default address", proxyAddr: "127.0.0.1:8080",
			common: []string{"TOKEN_ISSUER=http://localhost:8080", "TOKEN_AUDIENCE=tollgate", "LOG_LEVEL=info"},
			core:   []string{"PUBLIC_BASE_URL=http://localhost:8080"}},
		{name: "another proxy address", proxyAddr: "127.0.0.1:18080",
			common: []string{"TOKEN_ISSUER=http://localhost:18080", "TOKEN_AUDIENCE=tollgate", "LOG_LEVEL=info"},
			core:   []string{"PUBLIC_BASE_URL=http://localhost:18080"}},
		{name: "the user's public URL", proxyAddr: "127.0.0.1:18080", env: map[string]string{"PUBLIC_BASE_URL": "http://127.0.0.1:28080/"},
			common: []string{"TOKEN_ISSUER=http://127.0.0.1:28080", "TOKEN_AUDIENCE=tollgate", "LOG_LEVEL=info"},
			core:   nil},
		{name: "the user's issuer", proxyAddr: "127.0.0.1:18080", env: map[string]string{"TOKEN_ISSUER": "http://localhost:9999", "TOKEN_AUDIENCE": "mine", "LOG_LEVEL": "debug"},
			common: nil,
			core:   []string{"PUBLIC_BASE_URL=http://localhost:18080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			common, core := serviceDefaults(func(k string) string { return tc.env[k] }, tc.proxyAddr)
			if !slices.Equal(common, tc.common) {
				t.Errorf("both services get %q, want %q", common, tc.common)
			}
			if !slices.Equal(core, tc.core) {
				t.Errorf("coreapi gets %q, want %q", core, tc.core)
			}
		})
	}
}
