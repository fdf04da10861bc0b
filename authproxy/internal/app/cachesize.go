package app

import (
	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/server"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// TokenEntryBytes is the measured heap of a cached token with its warm
// state (identity header values and HMAC state).
const TokenEntryBytes = tokens.EntryBytes + server.WarmBytes

// CacheEntries is the number of entries of the token and the projection
// cache. CACHE_MEMORY_MB is shared so that both hold the same number of
// entries (a warm request needs one of each), at the measured bytes per
// entry; TOKEN_CACHE_SIZE and PROJECTION_CACHE_SIZE, when set, override
// the count of their cache (and the budget then does not bound it).
func CacheEntries(cfg *config.Config) (token, proj int64) {
	pairs := max(cfg.CacheMemoryMB<<20/(TokenEntryBytes+projection.EntryBytes), 1)
	token, proj = pairs, pairs
	if cfg.TokenCacheSize > 0 {
		token = cfg.TokenCacheSize
	}
	if cfg.ProjectionCacheSize > 0 {
		proj = cfg.ProjectionCacheSize
	}
	return token, proj
}
