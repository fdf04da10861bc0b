// Package permissions is the permission vocabulary of a deployment: the
// built-in permissions of the tenant API plus the ones the operator's apps
// declare in a catalog (PERMISSIONS_FILE or PERMISSIONS), validated at
// start, and the record in the database of which catalog replicas last
// started with (a changed catalog invalidates every cached projection).
package permissions

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
)

// Built-in permissions of the tenant API.
const (
	TenantRead   = "tenant:read"
	TenantWrite  = "tenant:write"
	UsersRead    = "users:read"
	UsersWrite   = "users:write"
	RolesRead    = "roles:read"
	RolesWrite   = "roles:write"
	AuditRead    = "audit:read"
	APIKeysWrite = "api-keys:write"
)

// builtins are the permissions every catalog starts with. tenant:read is
// the only one members get by default.
func builtins() []Entry {
	return []Entry{
		{Name: APIKeysWrite, Description: "Create and revoke the tenant's API keys", Builtin: true},
		{Name: AuditRead, Description: "Read the tenant's audit trail", Builtin: true},
		{Name: RolesRead, Description: "List the tenant's roles", Builtin: true},
		{Name: RolesWrite, Description: "Create, change and delete custom roles", Builtin: true},
		{Name: TenantRead, Description: "Read the tenant", Builtin: true, MemberDefault: true},
		{Name: TenantWrite, Description: "Change the tenant", Builtin: true},
		{Name: UsersRead, Description: "List the tenant's members", Builtin: true},
		{Name: UsersWrite, Description: "Add and remove members, grant and revoke roles", Builtin: true},
	}
}

// BuiltinNames returns the built-in permissions, sorted.
func BuiltinNames() []string {
	b := builtins()
	out := make([]string, len(b))
	for i, e := range b {
		out[i] = e.Name
	}
	slices.Sort(out)
	return out
}

// IsBuiltin reports whether name is a built-in permission.
func IsBuiltin(name string) bool {
	return slices.ContainsFunc(builtins(), func(e Entry) bool { return e.Name == name })
}

// nameRE is the syntax of every permission: resource:action, lower case.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$`)

// Limits of a catalog entry and of the whole catalog. MaxListBytes bounds
// every name joined with commas (built-ins included): the owner's
// X-Auth-Permissions header carries them all, and it must stay well inside
// the header buffers of the proxy, coreapi and the apps.
const (
	MaxName        = 100
	MaxDescription = 500
	MaxEntries     = 500
	MaxListBytes   = 8 << 10
)

// ValidName reports whether s has the syntax of a permission name.
func ValidName(s string) bool { return len(s) <= MaxName && nameRE.MatchString(s) }

// Entry is one permission of the catalog.
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Builtin marks the permissions of the tenant API itself.
	Builtin bool `json:"builtin"`
	// MemberDefault: the built-in member role holds it.
	MemberDefault bool `json:"member_default"`
}

// Catalog is the live permission vocabulary: built-ins plus declared
// entries, sorted by name. Its permissions are immutable once built; the
// one thing that changes is what its replica last read of the database's
// record (Standing), kept atomically: share it freely.
type Catalog struct {
	entries []Entry
	names   []string // every name, sorted
	admin   []string // all but tenant:write
	member  []string // member_default ones
	hash    string
	version int64 // orders catalogs in a rollout (Record)
	// seen is the catalog record as last read with this catalog (Record,
	// CheckCurrent, Reread); nil until one was read.
	seen *atomic.Pointer[recorded]
}

// recorded is one reading of the database's catalog record.
type recorded struct {
	hash    string
	version int64
}

// Builtin returns the catalog of a deployment that declares nothing.
func Builtin() *Catalog { return newCatalog(0, nil) }

// newCatalog builds a catalog of the given version from declared entries
// that are already valid.
func newCatalog(version int64, declared []Entry) *Catalog {
	entries := slices.Concat(builtins(), declared)
	slices.SortFunc(entries, func(a, b Entry) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	c := &Catalog{entries: entries, version: version, seen: new(atomic.Pointer[recorded])}
	h := sha256.New()
	for _, e := range entries {
		c.names = append(c.names, e.Name)
		if e.Name != TenantWrite {
			c.admin = append(c.admin, e.Name)
		}
		if e.MemberDefault {
			c.member = append(c.member, e.Name)
		}
		// Only what changes projections goes into the hash: names and
		// member defaults, not descriptions.
		h.Write([]byte(e.Name + "\x00" + strconv.FormatBool(e.MemberDefault) + "\n"))
	}
	c.hash = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return c
}

// Entries returns every permission, sorted by name. Callers must not
// modify the slice.
func (c *Catalog) Entries() []Entry { return c.entries }

// Names returns every permission name, sorted: what the built-in owner
// role holds. Callers must not modify the slice.
func (c *Catalog) Names() []string { return c.names }

// AdminNames returns what the built-in admin role holds: every permission
// but tenant:write. Callers must not modify the slice.
func (c *Catalog) AdminNames() []string { return c.admin }

// MemberNames returns what the built-in member role holds: tenant:read and
// the catalog's member_default permissions. Callers must not modify the
// slice.
func (c *Catalog) MemberNames() []string { return c.member }

// Has reports whether name is a permission of the catalog.
func (c *Catalog) Has(name string) bool {
	_, ok := slices.BinarySearch(c.names, name)
	return ok
}

// Unknown returns the members of perms that are not in the catalog, in
// order, without repeats.
func (c *Catalog) Unknown(perms []string) []string {
	var out []string
	for _, p := range perms {
		if !c.Has(p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Known returns the members of perms that are in the catalog (a stored
// custom role may name permissions since removed from it).
func (c *Catalog) Known(perms []string) []string {
	out := make([]string, 0, len(perms))
	for _, p := range perms {
		if c.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// Hash identifies what of the catalog shapes projections (names and member
// defaults). Replicas store it; a new value invalidates every projection.
func (c *Catalog) Hash() string { return c.hash }

// Version is the catalog's declared version (0 when it declares none).
// It orders catalogs during a rollout: a replica does not replace a
// recorded catalog of a higher version with its own (Record). It is not
// part of Hash: it shapes no projection.
func (c *Catalog) Version() int64 { return c.version }

// Standing is the catalog record as this catalog's replica last read it
// (Record at start, CheckCurrent in a guarded change, Reread): behind is
// true while the recorded catalog is not this one, so the replica refuses
// the changes CheckCurrent guards (ErrRollout); version is the recorded
// catalog's. read is false, and behind with it, until a record was read
// (none stored yet, or not read yet).
func (c *Catalog) Standing() (behind bool, version int64, read bool) {
	r := c.seen.Load()
	if r == nil {
		return false, 0, false
	}
	return r.hash != c.hash, r.version, true
}

// saw keeps a reading of the catalog record (Standing).
func (c *Catalog) saw(hash string, version int64) {
	c.seen.Store(&recorded{hash: hash, version: version})
}
