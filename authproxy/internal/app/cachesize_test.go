package app

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
)

func loadCacheConfig(t *testing.T, vars map[string]string) (*config.Config, error) {
	t.Helper()
	vars["IDENTITY_HMAC_KEY"] = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	return config.Load(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
}

// The budget is split so that both caches hold as many entries as fit in
// CACHE_MEMORY_MB at the measured bytes per entry; an explicit size
// overrides its cache's share.
func TestCacheEntries(t *testing.T) {
	t.Parallel()
	perPair := int64(TokenEntryBytes + projection.EntryBytes)
	for _, tc := range []struct {
		vars        map[string]string
		token, proj int64
	}{
		{map[string]string{}, 256 << 20 / perPair, 256 << 20 / perPair},
		{map[string]string{"CACHE_MEMORY_MB": "64"}, 64 << 20 / perPair, 64 << 20 / perPair},
		{map[string]string{"CACHE_MEMORY_MB": "64", "TOKEN_CACHE_SIZE": "5000"}, 5000, 64 << 20 / perPair},
		{map[string]string{"PROJECTION_CACHE_SIZE": "7"}, 256 << 20 / perPair, 7},
	} {
		cfg, err := loadCacheConfig(t, tc.vars)
		if err != nil {
			t.Fatal(err)
		}
		tok, proj := CacheEntries(cfg)
		if tok != tc.token || proj != tc.proj {
			t.Errorf("%v: entries %d/%d, want %d/%d", tc.vars, tok, proj, tc.token, tc.proj)
		}
		if _, ok := tc.vars["TOKEN_CACHE_SIZE"]; !ok && tok*TokenEntryBytes+proj*projection.EntryBytes > cfg.CacheMemoryMB<<20 {
			t.Errorf("%v: the caches' cost exceeds the budget", tc.vars)
		}
	}
	// The default budget holds the 100k-user working set with headroom.
	if tok, _ := CacheEntries(must(loadCacheConfig(t, map[string]string{}))); tok < 120_000 {
		t.Errorf("default budget holds %d users, want >= 120000", tok)
	}
}

func must(c *config.Config, err error) *config.Config {
	if err != nil {
		panic(err)
	}
	return c
}

func TestCacheBudgetRejectsBadValues(t *testing.T) {
	t.Parallel()
	for _, bad := range []map[string]string{
		{"CACHE_MEMORY_MB": "0"}, {"CACHE_MEMORY_MB": "-5"}, {"CACHE_MEMORY_MB": "64MB"},
		{"TOKEN_CACHE_SIZE": "0"}, {"PROJECTION_CACHE_SIZE": "many"},
	} {
		var name string
		for k := range bad {
			name = k
		}
		_, err := loadCacheConfig(t, bad)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: err %v, want one naming %s", bad, err, name)
		}
	}
}
