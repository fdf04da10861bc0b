package projection

import "slices"

// Narrow returns a copy of e whose permissions are those of e that scope
// also lists, and which has no roles: the projection a token with a scope
// claim acts with. A role's name stands for everything the role grants,
// which the token does not hold: forwarded, an app that authorizes by
// role name would let a token scoped to notes:read act as admin (an API
// key's requests carry no roles for the same reason). The copy keeps e's
// generations and expiry, so Valid judges it as it judges e. e itself is
// shared and left as it is.
func (e *Entry) Narrow(scope []string) *Entry {
	p := *e.P
	p.Roles = nil
	p.Permissions = make([]string, 0, len(scope))
	for _, perm := range e.P.Permissions {
		if slices.Contains(scope, perm) {
			p.Permissions = append(p.Permissions, perm)
		}
	}
	n := *e
	n.P = &p
	n.setLines()
	return &n
}
