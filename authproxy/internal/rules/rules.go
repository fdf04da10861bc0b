// Package rules decides, from the normalized path and the method alone,
// whether a request is public, needs a token (and which permissions), or is
// refused. Rules come from an optional YAML file, evaluated first, followed
// by built-in defaults; the first match wins and no match means 404.
// Paths under /internal are never reachable, whatever a file says.
package rules

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// Access is what a matching rule allows.
type Access int

// Access kinds.
const (
	Deny Access = iota
	Public
	Protected
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Protected:
		return "protected"
	}
	return "deny"
}

// Spec is one rule as written in the rules file.
type Spec struct {
	// Methods the rule applies to; empty means every method. HEAD is
	// matched by GET rules.
	Methods []string `json:"methods,omitempty"`
	// Path pattern: literal segments, "*" for exactly one segment, and a
	// final "**" for any number of segments (including none).
	Path string `json:"path"`
	// Access: public, protected or deny.
	Access string `json:"access"`
	// Permissions all required (protected rules only).
	Permissions []string `json:"permissions,omitempty"`
}

// File is the rules file.
type File struct {
	// ReplaceDefaults drops the built-in rules; only the file's apply.
	ReplaceDefaults bool   `json:"replace_defaults,omitempty"`
	Rules           []Spec `json:"rules"`
}

// Defaults are the built-in rules: the public endpoints of the API, then
// everything else under /api protected.
var defaultSpecs = []Spec{
	{Methods: []string{"POST"}, Path: "/api/v1/auth/signup", Access: "public"},
	{Methods: []string{"POST"}, Path: "/api/v1/auth/token", Access: "public"},
	{Methods: []string{"GET"}, Path: "/api/v1/auth/oauth/*/authorize", Access: "public"},
	{Methods: []string{"GET"}, Path: "/api/v1/auth/oauth/*/callback", Access: "public"},
	{Methods: []string{"GET"}, Path: "/.well-known/jwks.json", Access: "public"},
	{Methods: []string{"GET"}, Path: "/openapi.json", Access: "public"},
	{Methods: []string{"GET"}, Path: "/api/v1/openapi.json", Access: "public"},
	{Methods: []string{"GET"}, Path: "/api/v1/health", Access: "public"},
	{Path: "/api/**", Access: "protected"},
}

// Rule is a compiled rule.
type Rule struct {
	Access      Access
	Permissions []string
	methods     uint16 // bit set of methodBits; 0 = any
	segs        []string
	tail        bool // pattern ended in "**"
	pattern     string
}

// Pattern is the rule's path pattern, for logs.
func (r *Rule) Pattern() string { return r.pattern }

var methodBits = map[string]uint16{
	"GET": 1 << 0, "HEAD": 1 << 1, "POST": 1 << 2, "PUT": 1 << 3, "PATCH": 1 << 4,
	"DELETE": 1 << 5, "OPTIONS": 1 << 6, "CONNECT": 1 << 7, "TRACE": 1 << 8,
}

func methodBit(m []byte) uint16 {
	switch string(m) { // no allocation: the compiler special-cases this
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1<<1 | 1<<0 // GET rules match HEAD
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "PATCH":
		return 1 << 4
	case "DELETE":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "CONNECT":
		return 1 << 7
	case "TRACE":
		return 1 << 8
	}
	return 1 << 15
}

// Set is an ordered list of compiled rules.
type Set struct {
	rules []Rule
	deny  Rule
	inner Rule
}

// Load reads the rules file at path ("" means defaults only).
func Load(path string) (*Set, error) {
	if path == "" {
		return Compile(File{})
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(b)
}

// Parse parses a rules file (YAML or JSON, unknown fields refused).
func Parse(b []byte) (*Set, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse rules: %w", err)
	}
	return Compile(f)
}

// Compile validates f and returns the rule set, reporting every bad rule.
func Compile(f File) (*Set, error) {
	specs := f.Rules
	if !f.ReplaceDefaults {
		specs = append(append([]Spec(nil), f.Rules...), defaultSpecs...)
	}
	s := &Set{deny: Rule{Access: Deny, pattern: "(no rule)"}, inner: Rule{Access: Deny, pattern: "/internal/**"}}
	var errs []error
	for i, sp := range specs {
		r, err := compile(sp)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %d (%s): %w", i+1, sp.Path, err))
			continue
		}
		s.rules = append(s.rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func compile(sp Spec) (Rule, error) {
	var r Rule
	var errs []error
	switch strings.ToLower(sp.Access) {
	case "public":
		r.Access = Public
	case "protected":
		r.Access = Protected
	case "deny":
		r.Access = Deny
	default:
		errs = append(errs, fmt.Errorf("access %q: want public, protected or deny", sp.Access))
	}
	for _, m := range sp.Methods {
		bit, ok := methodBits[strings.ToUpper(m)]
		if !ok {
			errs = append(errs, fmt.Errorf("unknown method %q", m))
		}
		r.methods |= bit
	}
	if !strings.HasPrefix(sp.Path, "/") {
		errs = append(errs, errors.New("path must start with '/'"))
	} else {
		parts := strings.Split(strings.Trim(sp.Path, "/"), "/")
		if parts[0] == "" {
			parts = nil
		}
		for i, p := range parts {
			switch {
			case p == "**" && i == len(parts)-1:
				r.tail = true
			case p == "**":
				errs = append(errs, errors.New(`"**" only as the last segment`))
			case p == "" || p == "." || p == ".." || strings.ContainsAny(p, "%\\?#"):
				errs = append(errs, fmt.Errorf("segment %q not allowed", p))
			default:
				r.segs = append(r.segs, p)
			}
		}
		if r.tail {
			parts = parts[:len(parts)-1]
		}
		if len(parts) > 0 && parts[0] == "internal" && r.Access != Deny {
			errs = append(errs, errors.New("/internal is never reachable through the proxy"))
		}
	}
	for _, p := range sp.Permissions {
		if p == "" || strings.ContainsAny(p, ", \n\r") {
			errs = append(errs, fmt.Errorf("permission %q not allowed", p))
		}
	}
	if len(sp.Permissions) > 0 && r.Access != Protected {
		errs = append(errs, errors.New("permissions need access: protected"))
	}
	r.Permissions = sp.Permissions
	r.pattern = sp.Path
	return r, errors.Join(errs...)
}

// Match returns the first rule matching the method and normalized path; a
// request under /internal, or one no rule matches, gets a Deny rule. It
// does not allocate.
func (s *Set) Match(method, path []byte) *Rule {
	if isInternal(path) {
		return &s.inner
	}
	mb := methodBit(method)
	for i := range s.rules {
		r := &s.rules[i]
		if r.methods != 0 && r.methods&mb == 0 {
			continue
		}
		if r.match(path) {
			return r
		}
	}
	return &s.deny
}

func isInternal(path []byte) bool {
	const p = "/internal"
	if len(path) < len(p) || !strings.EqualFold(string(path[:len(p)]), p) {
		return false
	}
	return len(path) == len(p) || path[len(p)] == '/'
}

func (r *Rule) match(path []byte) bool {
	rest := path
	if len(rest) > 0 && rest[0] == '/' {
		rest = rest[1:]
	}
	for _, seg := range r.segs {
		if len(rest) == 0 {
			return false
		}
		end := 0
		for end < len(rest) && rest[end] != '/' {
			end++
		}
		if seg != "*" && seg != string(rest[:end]) {
			return false
		}
		rest = rest[end:]
		if len(rest) > 0 {
			rest = rest[1:]
		}
	}
	return len(rest) == 0 || r.tail
}
