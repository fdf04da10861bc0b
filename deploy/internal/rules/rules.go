// Package rules holds the authproxy rules file that the local stack and
// the end-to-end suite give the proxies: coreapi's account-lifecycle
// routes that need no token (the mailed links' pages and the routes their
// forms post to), ahead of the proxy's built-in defaults.
package rules

import (
	"fmt"
	"os"
	"path/filepath"
)

// Lifecycle is the rules file (authproxy RULES_FILE format).
const Lifecycle = `# coreapi's public account-lifecycle routes (written by the Tollgate
# deploy tooling; the proxy's built-in rules follow these).
rules:
  - {methods: [GET], path: /verify-email, access: public}
  - {methods: [GET], path: /reset-password, access: public}
  - {methods: [GET], path: /accept-invitation, access: public}
  - {methods: [POST], path: /api/v1/auth/verify-email, access: public}
  - {methods: [POST], path: /api/v1/auth/password/forgot, access: public}
  - {methods: [POST], path: /api/v1/auth/password/reset, access: public}
  - {methods: [POST], path: /api/v1/invitations/accept, access: public}
`

// Write writes the rules file into dir and returns its path.
func Write(dir string) (string, error) {
	p := filepath.Join(dir, "authproxy-rules.yaml")
	if err := os.WriteFile(p, []byte(Lifecycle), 0o644); err != nil {
		return "", fmt.Errorf("write proxy rules: %w", err)
	}
	return p, nil
}
