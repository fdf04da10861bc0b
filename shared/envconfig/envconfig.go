// Package envconfig reads a service's configuration from environment
// variables declared once, in a table. The table names each variable, its
// default, its meaning, whether it is required and whether it is secret;
// the same table drives reading (a variable not in it cannot be read),
// the masked printout of -check-config and of the start log, and the
// tests that hold the documentation and the Kubernetes manifests to it.
//
// Adding a variable is one entry in the service's table plus the line that
// reads it (r.String, r.Duration, r.Int, r.Bool) where the Config is built.
package envconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// Mask says how a value is printed.
type Mask int

const (
	// Plain values are printed as they are.
	Plain Mask = iota
	// Secret values are printed as ******** when set.
	Secret
	// URL values keep everything but a credential, which is masked: a
	// password, a query parameter naming a password, secret or token
	// (PostgreSQL's ?password= and ?sslpassword=), and the user of a
	// nats:// or tls:// URL that has no password (a NATS token); a value
	// that is not a URL (a key=value connection string) is masked whole.
	URL
	// KeyList values ("id:secret,id:secret") show their ids only.
	KeyList
)

// Var is one environment variable.
type Var struct {
	// Name is the variable's name. A name holding <NAME> is a template:
	// OIDC_<NAME>_ISSUER stands for OIDC_GOOGLE_ISSUER and the like.
	Name string
	// Default is the value used when the variable is unset or blank,
	// written as an operator would (durations like 15m). Empty: none.
	Default string
	// DefaultDoc describes a default computed at start (4 × GOMAXPROCS);
	// Default is then empty.
	DefaultDoc string
	// Required: the commands listed in Commands (and serve) refuse to
	// start without it.
	Required bool
	// OneOf names a group of alternatives of which one must be set
	// (IDENTITY_KEYS or IDENTITY_KEYS_FILE or ...).
	OneOf string
	// Commands lists the commands besides serve that read the variable
	// (migrate, keys, tenants).
	Commands []string
	Mask     Mask
	Help     string
}

// Table is the list of a service's variables, in documentation order.
type Table []Var

// Lookup returns the variable (or template) that name belongs to.
func (t Table) Lookup(name string) (Var, bool) {
	for _, v := range t {
		if v.Name == name || matchTemplate(v.Name, name) {
			return v, true
		}
	}
	return Var{}, false
}

// ReadBy reports whether command reads v.
func (v Var) ReadBy(command string) bool {
	if command == "serve" || command == "" {
		return true
	}
	for _, c := range v.Commands {
		if c == command {
			return true
		}
	}
	return false
}

func matchTemplate(tmpl, name string) bool {
	pre, suf, ok := strings.Cut(tmpl, "<NAME>")
	if !ok || len(name) <= len(pre)+len(suf) || !strings.HasPrefix(name, pre) || !strings.HasSuffix(name, suf) {
		return false
	}
	for _, c := range name[len(pre) : len(name)-len(suf)] {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Reader reads variables of a table through getenv, collecting every
// problem and what to print.
type Reader struct {
	table    Table
	getenv   func(string) string
	problems []string
	shown    []Setting
	derived  []Setting
	read     map[string]bool
}

// Read starts reading t through getenv (os.Getenv in main).
func (t Table) Read(getenv func(string) string) *Reader {
	return &Reader{table: t, getenv: getenv, read: map[string]bool{}}
}

// LookupEnv adapts os.LookupEnv and the like to Read.
func LookupEnv(lookup func(string) (string, bool)) func(string) string {
	return func(name string) string {
		v, _ := lookup(name)
		return v
	}
}

// Raw returns the variable's value with surrounding white space removed
// (a Secret mounted as a file often ends in a newline), or "" when unset.
func (r *Reader) Raw(name string) string {
	if _, ok := r.table.Lookup(name); !ok {
		r.problems = append(r.problems, name+": read but not in the configuration table")
		return ""
	}
	r.read[name] = true
	return strings.TrimSpace(r.getenv(name))
}

// value returns the trimmed value, or the table's default when blank.
func (r *Reader) value(name string) string {
	if v := r.Raw(name); v != "" {
		return v
	}
	v, _ := r.table.Lookup(name)
	return v.Default
}

// String returns the value or the default.
func (r *Reader) String(name string) string {
	v := r.value(name)
	r.Show(name, v)
	return v
}

// StringOrFile reads the variable name or name_FILE, the path of a file
// holding its value (a mounted Secret), so that a value carrying a
// password need not pass through the environment; not both. The file is
// read within secretfile.MaxSize and its surrounding white space (the
// trailing newline) removed. It returns the value (the default when
// neither is set) and what a problem with the value should name: name, or
// name_FILE and the file's path. ok is false, with the value "", when a
// problem is recorded: both set, or a file that cannot be read or holds
// nothing.
func (r *Reader) StringOrFile(name string) (value, source string, ok bool) {
	fileVar := name + "_FILE"
	path := r.String(fileVar)
	value = r.String(name)
	if path == "" {
		return value, name, true
	}
	source = fileVar + " " + path
	value, err := FileValue(name, r.Raw(name), path)
	if err != nil {
		r.Problem("%s", err)
		return "", source, false
	}
	r.Show(name, value)
	return value, source, true
}

// FileValue is the value of name read from the file its name_FILE
// variable names (path), as Reader.StringOrFile reads it, for a package
// that reads its variables through a getenv function rather than a
// Reader (tracing): value is name's own value, which must be empty. The
// file is read within secretfile.MaxSize and its surrounding white space
// removed; the error (both set, a file that cannot be read or holds
// nothing) names name_FILE and the path, as the Reader's problem does.
func FileValue(name, value, path string) (string, error) {
	fileVar := name + "_FILE"
	source := fileVar + " " + path
	if value != "" {
		return "", fmt.Errorf("%s / %s: set one, not both", name, fileVar)
	}
	b, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("%s: %s", source, withoutPath(err, path))
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: empty", source)
	}
	return v, nil
}

// withoutPath is a file error without the path, which the problem names
// already.
func withoutPath(err error, path string) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return strings.TrimPrefix(err.Error(), path+": ")
}

// Duration parses a duration of at least min (and at most max when max >
// 0); a bad value is a problem and yields the default.
func (r *Reader) Duration(name string, min, max time.Duration) time.Duration {
	v := r.value(name)
	def, _ := time.ParseDuration(defaultOf(r.table, name))
	if v == "" {
		r.Show(name, def.String())
		return def
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		r.Failf(name, "want a duration like 30s or 15m, got %q", v)
		d = def
	case d < min:
		r.Failf(name, "%s is below the minimum of %s", d, min)
		d = def
	case max > 0 && d > max:
		r.Failf(name, "%s is above the maximum of %s", d, max)
		d = def
	}
	r.Show(name, d.String())
	return d
}

// Int parses an integer of at least min (and at most max when max > 0).
// def is used when the table gives no literal default (a computed one).
func (r *Reader) Int(name string, min, max, def int) int {
	v := r.value(name)
	if d := defaultOf(r.table, name); d != "" {
		def, _ = strconv.Atoi(d)
	}
	n := def
	if v != "" {
		var err error
		n, err = strconv.Atoi(v)
		switch {
		case err != nil:
			r.Failf(name, "want an integer, got %q", v)
			n = def
		case n < min:
			r.Failf(name, "%d is below the minimum of %d", n, min)
			n = def
		case max > 0 && n > max:
			r.Failf(name, "%d is above the maximum of %d", n, max)
			n = def
		}
	}
	r.Show(name, strconv.Itoa(n))
	return n
}

// Bool parses true or false (and the other forms strconv accepts).
func (r *Reader) Bool(name string) bool {
	v := r.value(name)
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Failf(name, "want true or false, got %q", v)
		b, _ = strconv.ParseBool(defaultOf(r.table, name))
	}
	r.Show(name, strconv.FormatBool(b))
	return b
}

// ListenAddr reads a listen address, host:port or :port, the port a
// number from 0 to 65535 (0: one the system picks), as net.Listen takes it:
// -check-config refuses what the start would fail on.
func (r *Reader) ListenAddr(name string) string {
	v := r.String(name)
	if _, port, err := net.SplitHostPort(v); err != nil {
		r.Failf(name, "want host:port or :port, got %q", v)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		r.Failf(name, "want a port from 0 to 65535 in %q", v)
	}
	return v
}

// SameListener reports whether listen addresses a and b (as ListenAddr
// accepts them) take the same port on a common address, so that the
// second net.Listen fails: the same port, not 0, and the same host or one
// of them every address ("", 0.0.0.0 or ::). Host names are not resolved.
func SameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return false
	}
	na, err1 := strconv.Atoi(pa)
	nb, err2 := strconv.Atoi(pb)
	if err1 != nil || err2 != nil || na != nb || na == 0 {
		return false
	}
	every := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return strings.EqualFold(ha, hb) || every(ha) || every(hb)
}

func defaultOf(t Table, name string) string {
	v, _ := t.Lookup(name)
	return v.Default
}

// Failf records a problem with the variable name.
func (r *Reader) Failf(name, format string, args ...any) {
	r.problems = append(r.problems, name+": "+fmt.Sprintf(format, args...))
}

// Problem records a problem that concerns several variables or none.
func (r *Reader) Problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// Show sets what the printout shows for name (masked by the table's Mask);
// the last call wins.
func (r *Reader) Show(name, value string) {
	v, _ := r.table.Lookup(name)
	value = mask(v.Mask, value)
	for i := range r.shown {
		if r.shown[i].Name == name {
			r.shown[i].Value = value
			return
		}
	}
	r.shown = append(r.shown, Setting{Name: name, Value: value})
}

// Derive adds a setting computed from several variables (the key ids of a
// key file, a catalog's hash): printed after the variables as
// "# name: value", logged as name_with_underscores. Never a secret.
func (r *Reader) Derive(name, value string) {
	r.derived = append(r.derived, Setting{Name: name, Value: value, Derived: true})
}

// Problems returns the problems found so far.
func (r *Reader) Problems() []string { return r.problems }

// Err returns every problem found, or nil.
func (r *Reader) Err() error {
	if len(r.problems) == 0 {
		return nil
	}
	return &Error{Problems: append([]string(nil), r.problems...)}
}

// WasRead reports whether the variable was read (tests: every table entry
// is read by the loader).
func (r *Reader) WasRead(name string) bool { return r.read[name] }

// Printout returns the settings in table order, masked.
func (r *Reader) Printout() Printout {
	var out Printout
	for _, v := range r.table {
		for _, s := range r.shown {
			if s.Name == v.Name || matchTemplate(v.Name, s.Name) {
				out = append(out, s)
			}
		}
	}
	return append(out, r.derived...)
}

// Error lists every configuration problem.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Join merges configuration problems (e.g. a rules file's) into err.
func Join(err error, more ...string) error {
	if len(more) == 0 {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Problems: append(append([]string(nil), e.Problems...), more...)}
	}
	if err != nil {
		more = append([]string{err.Error()}, more...)
	}
	return &Error{Problems: more}
}

// Setting is one printed variable, or a derived setting.
type Setting struct {
	Name, Value string
	Derived     bool
}

// Printout is a configuration as printed: -check-config writes String,
// the start log carries LogValue; both mask the same way.
type Printout []Setting

// String renders NAME=value lines.
func (p Printout) String() string {
	var b strings.Builder
	for _, s := range p {
		if s.Derived {
			b.WriteString("# " + s.Name + ": " + s.Value + "\n")
			continue
		}
		b.WriteString(s.Name)
		b.WriteByte('=')
		b.WriteString(s.Value)
		b.WriteByte('\n')
	}
	return b.String()
}

// LogValue renders a group of lower-case names.
func (p Printout) LogValue() slog.Value {
	attrs := make([]slog.Attr, len(p))
	for i, s := range p {
		attrs[i] = slog.String(strings.ToLower(strings.ReplaceAll(s.Name, " ", "_")), s.Value)
	}
	return slog.GroupValue(attrs...)
}

// Masked is what a Secret value prints as.
const Masked = "********"

func mask(m Mask, v string) string {
	if v == "" {
		return ""
	}
	switch m {
	case Secret:
		return Masked
	case URL:
		return MaskURL(v)
	case KeyList:
		var ids []string
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' }) {
			id, _, ok := strings.Cut(f, ":")
			if !ok {
				id = "?"
			}
			ids = append(ids, id+":"+Masked)
		}
		return strings.Join(ids, ",")
	}
	return v
}

// MaskURL is v as the URL mask prints it (see URL): without its
// credentials, and ******** whole when it does not parse (a password with
// an unescaped '%' makes it unparsable), so that a problem quoting the
// value shows no more than the printout.
func MaskURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" {
		return Masked
	}
	if u.User == nil && u.Host == "" && strings.Contains(v, "@") {
		// No authority ("postgres:u:pw@h", "postgres:/u:pw@h": slashes
		// missing, or one too many): what was meant as user
		// information is the opaque part or the path, which print as
		// written.
		return Masked
	}
	if strings.Contains(u.Path+u.RawQuery+u.Fragment, "@") {
		// An '@' after the authority: what was meant as user
		// information may run past it, a '/', '?' or '#' left unescaped
		// in the password ("postgres://u:12?pw@h/db": the host is "u:12"
		// and the rest of the password the query), and print as written.
		return Masked
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else if u.Scheme == "nats" || u.Scheme == "tls" {
			u.User = url.User("xxxxx")
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = Masked
		} else {
			secret := false
			for k := range q {
				if credentialParam(k) {
					q[k] = []string{"xxxxx"}
					secret = true
				}
			}
			if secret {
				u.RawQuery = q.Encode()
			}
		}
	}
	return u.String()
}

// ProblemURL is a refused URL as a configuration problem quotes it (they
// are logged): the user information, whose user as well as password may
// be a credential, and the query are replaced by xxxxx, also in a URL that
// does not parse; the rest is shown as written. Not MaskURL, which keeps
// a user without a password and the query parameters not named as
// credentials, and hides an unparsable URL whole: a refused URL must
// still show its host and what is wrong with it (a missing scheme, a
// path), and nothing of what may be a credential.
func ProblemURL(s string) string {
	const masked = "xxxxx"
	scheme, rest, ok := strings.Cut(s, "://")
	if ok && strings.ContainsAny(scheme, ":/?#@") {
		// Not a scheme: the "://" comes later, in a path or query
		// ("postgres:/u:pw@h/db?next=http://x").
		ok = false
	}
	if !ok {
		scheme, rest = "", s
	} else {
		scheme += "://"
	}
	// The user information ends at the last '@' of the value: a password
	// may hold a '/', '?' or '#' left unescaped ("postgres://u:12?pw@h",
	// "postgres://u:12/pw@h"), which would end the authority before it,
	// and without "://", or with nothing before the first '/'
	// ("postgres:/u:pw@h", "postgres:///u:pw@h": slashes missing, or one
	// too many), it lies after a '/' too. An '@' of a path or query is
	// taken for one as well: masking a host shows less, never a password.
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = masked + rest[i:]
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		frag := ""
		if j := strings.IndexByte(rest[i:], '#'); j >= 0 {
			frag = rest[i+j:]
		}
		rest = rest[:i+1] + masked + frag
	}
	return scheme + rest
}

// credentialParam reports whether a URL query parameter's name says it
// holds a credential: a password, secret or token, and the API keys,
// authorization values and signatures that collectors and other hosted
// endpoints take in the URL (api_key, apikey, access_key, auth, sig...).
func credentialParam(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "secret", "token", "key", "auth", "sig", "credential"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
