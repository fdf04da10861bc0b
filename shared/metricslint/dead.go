package metricslint

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// A Metric is one metric a module's code defines, as Dead found it.
type Metric struct {
	Name string // the full name, e.g. authproxy_cache_hits_total
	Kind string // the constructor, e.g. NewCounterVec, NewGaugeFunc, NewDesc
	Pos  string // file:line of the definition
	// Live: some code path can change its value (an update call on it or
	// on a child of it, a child handed out to other code, or a value read
	// from a function or a collector's Collect).
	Live bool
}

// DeadReport is what Dead finds under a module's root.
type DeadReport struct {
	Metrics  map[string]*Metric // by name
	Problems []string           // one line a problem, sorted
}

// Dead reads the Go code under root (test files excluded) and reports the
// metrics that can never be anything but zero:
//
//   - a metric made with prometheus.New{Counter,Gauge,Histogram,Summary}
//     (or a Vec of them, or promauto's) that no code updates: no Inc, Dec,
//     Add, Sub, Set, SetToCurrentTime or Observe on it, nor on a child of it
//     (X.WithLabelValues(...) or X.With(...), called directly or through a
//     name the child was stored under); a child returned or passed to
//     other code counts as updated there. A gauge nothing sets is one of
//     these;
//   - a child created only to export a series at zero from the start
//     (X.WithLabelValues("a", "b") as a statement of its own, literal
//     values or values of a range over a literal list) for a combination of
//     label values that no update call of X can produce: each update's
//     label arguments are resolved to the string constants they can hold
//     (literals, constants, what a function of the module returns, what
//     its callers pass for a parameter); an argument that cannot be
//     resolved (strconv.Itoa(status)) matches any value;
//   - a child stored under a name (m.VerifyOK = X.WithLabelValues("ok"))
//     that nothing updates.
//
// Metrics whose value is read when scraped (NewGaugeFunc, NewCounterFunc,
// NewUntypedFunc) are live; so are descriptors (prometheus.NewDesc, or a
// local function wrapping it) that a Collect method uses. Names are matched
// as Go identifiers: an exported field or variable anywhere in the module, an
// unexported one in its own package (which is the only place that can
// reach it). A wrapper method that updates a metric counts even if nothing
// calls it.
func Dead(root string) (*DeadReport, error) {
	a := &deadAnalysis{fset: token.NewFileSet(), consts: map[scopedName]string{}, funcs: map[scopedName][]*ast.FuncDecl{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (d.Name() == "testdata" || d.Name() == "vendor" || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(a.fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		a.files = append(a.files, srcFile{dir: filepath.Dir(p), f: f})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a.run(), nil
}

// CheckDead fails t for each problem Dead finds under root (a service's
// module), or when it finds fewer than min metrics of prefix (a broken
// parse). It returns the report for further checks (CheckAlwaysZero).
func CheckDead(t testing.TB, root, prefix string, min int) *DeadReport {
	t.Helper()
	r, err := Dead(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name := range r.Metrics {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	if n < min {
		t.Fatalf("%d %s metrics found under %s; the parse is broken", n, prefix, root)
	}
	for _, p := range r.Problems {
		t.Error(p)
	}
	return r
}

type srcFile struct {
	dir string
	f   *ast.File
}

// scopedName is an identifier: an exported one has no dir (module-wide).
type scopedName struct{ dir, name string }

func scope(dir, name string) scopedName {
	if ast.IsExported(name) {
		return scopedName{name: name}
	}
	return scopedName{dir: dir, name: name}
}

// collector is a metric definition or a named child of one.
type collector struct {
	metric  *Metric
	binding scopedName // "" name: not stored under a name
	parent  *collector // a named child: its metric's collector
	pos     string
	updated bool
}

// labelCall is a WithLabelValues call of a collector binding.
type labelCall struct {
	recv scopedName
	args []ast.Expr
	fn   ast.Node // the enclosing function
	dir  string
	pos  string
}

type deadAnalysis struct {
	fset  *token.FileSet
	files []srcFile

	consts map[scopedName]string          // string constants
	funcs  map[scopedName][]*ast.FuncDecl // functions and methods by name

	collectors []*collector
	byBinding  map[scopedName][]*collector
	descUsed   map[scopedName]bool         // names a Collect method mentions
	updates    map[scopedName]bool         // names an update call is made on
	handedOut  map[scopedName]bool         // names whose children go to other code
	aliases    map[scopedName][]scopedName // c := s.counters[k]: c -> counters
	preinit    []labelCall                 // X.WithLabelValues(...) as a statement
	producing  []labelCall                 // every other X.WithLabelValues(...)
}

var (
	metricKinds = map[string]bool{"NewCounter": true, "NewCounterVec": true, "NewGauge": true, "NewGaugeVec": true,
		"NewHistogram": true, "NewHistogramVec": true, "NewSummary": true, "NewSummaryVec": true}
	funcKinds     = map[string]bool{"NewGaugeFunc": true, "NewCounterFunc": true, "NewUntypedFunc": true}
	updateMethods = map[string]bool{"Inc": true, "Dec": true, "Add": true, "Sub": true, "Set": true, "SetToCurrentTime": true, "Observe": true}
	childMethods  = map[string]bool{"WithLabelValues": true, "With": true, "GetMetricWithLabelValues": true, "GetMetricWith": true}
)

func (a *deadAnalysis) pos(n ast.Node) string {
	p := a.fset.Position(n.Pos())
	return fmt.Sprintf("%s:%d", p.Filename, p.Line)
}

func (a *deadAnalysis) run() *DeadReport {
	a.byBinding = map[scopedName][]*collector{}
	a.descUsed = map[scopedName]bool{}
	a.updates = map[scopedName]bool{}
	a.handedOut = map[scopedName]bool{}
	a.aliases = map[scopedName][]scopedName{}
	report := &DeadReport{Metrics: map[string]*Metric{}}
	for _, sf := range a.files {
		a.declarations(sf)
	}
	for _, sf := range a.files {
		a.definitions(sf, report)
	}
	for _, sf := range a.files {
		a.uses(sf)
	}
	// An update on a local name that holds a collector (c :=
	// s.counters[k]; c.Inc()) is an update of the collector.
	for changed := true; changed; {
		changed = false
		for alias, targets := range a.aliases {
			if !a.updates[alias] {
				continue
			}
			for _, t := range targets {
				if !a.updates[t] {
					a.updates[t], changed = true, true
				}
			}
		}
	}
	var problems []string
	// A collector is updated when an update is made on its name, or on a
	// child of it stored under a name that is updated, or when its
	// children are handed out.
	for _, c := range a.collectors {
		if c.binding.name != "" && (a.updates[c.binding] || a.handedOut[c.binding]) {
			c.updated = true
		}
	}
	for _, c := range a.collectors {
		if c.parent != nil && c.updated {
			c.parent.updated = true
		}
	}
	for _, c := range a.collectors {
		switch {
		case c.parent != nil:
			if !c.updated {
				problems = append(problems, fmt.Sprintf("%s: %s: the child %s is stored but never updated", c.pos, c.metric.Name, c.binding.name))
			}
		case c.metric.Kind == "NewDesc":
			c.metric.Live = c.metric.Live || a.descUsed[c.binding]
		case funcKinds[c.metric.Kind]:
			c.metric.Live = true
		default:
			c.metric.Live = c.metric.Live || c.updated
		}
	}
	names := make([]string, 0, len(report.Metrics))
	for n := range report.Metrics {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if m := report.Metrics[n]; !m.Live {
			problems = append(problems, fmt.Sprintf("%s: %s (%s) is never updated: it can only be zero", m.Pos, n, m.Kind))
		}
	}
	problems = append(problems, a.checkPreinit()...)
	sort.Strings(problems)
	report.Problems = problems
	return report
}

// declarations records string constants and functions.
func (a *deadAnalysis) declarations(sf srcFile) {
	for _, d := range sf.f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			k := scope(sf.dir, d.Name.Name)
			a.funcs[k] = append(a.funcs[k], d)
		case *ast.GenDecl:
			if d.Tok != token.CONST {
				continue
			}
			for _, s := range d.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := stringLit(vs.Values[i]); ok {
							a.consts[scope(sf.dir, n.Name)] = v
						}
					}
				}
			}
		}
	}
}

// descFactories are the local functions wrapping prometheus.NewDesc
// (d := func(name, help string) *prometheus.Desc {...}).
func descFactories(f *ast.File) map[string]bool {
	out := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
			return true
		}
		id, ok1 := as.Lhs[0].(*ast.Ident)
		fl, ok2 := as.Rhs[0].(*ast.FuncLit)
		if ok1 && ok2 {
			ast.Inspect(fl.Body, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok && constructor(c) == "NewDesc" {
					out[id.Name] = true
				}
				return true
			})
		}
		return true
	})
	return out
}

// constructor returns the name of a prometheus/promauto constructor that c
// calls ("NewCounterVec"), or "".
func constructor(c *ast.CallExpr) string {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	name := sel.Sel.Name
	if !metricKinds[name] && !funcKinds[name] && name != "NewDesc" {
		return ""
	}
	switch x := sel.X.(type) {
	case *ast.Ident:
		if x.Name == "prometheus" || x.Name == "promauto" {
			return name
		}
	case *ast.CallExpr: // promauto.With(reg).NewCounter
		if s, ok := x.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == "With" {
			if id, ok := s.X.(*ast.Ident); ok && id.Name == "promauto" {
				return name
			}
		}
	}
	return ""
}

// metricName reads the name from a constructor's options literal (Name,
// with Namespace and Subsystem) or NewDesc's first argument.
func metricName(c *ast.CallExpr, kind string) string {
	if len(c.Args) == 0 {
		return ""
	}
	if kind == "NewDesc" {
		v, _ := stringLit(c.Args[0])
		return v
	}
	lit, ok := c.Args[0].(*ast.CompositeLit)
	if !ok {
		return ""
	}
	var parts [3]string
	for _, e := range lit.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		k, _ := kv.Key.(*ast.Ident)
		v, _ := stringLit(kv.Value)
		if k == nil {
			continue
		}
		switch k.Name {
		case "Namespace":
			parts[0] = v
		case "Subsystem":
			parts[1] = v
		case "Name":
			parts[2] = v
		}
	}
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "_")
}

// bindingOf returns the name the value at the top of stack (a call) is
// stored under: a composite literal's key, an assignment's or a var
// declaration's left side; "" when it is not stored (registered at once,
// passed, returned).
func bindingOf(stack []ast.Node, call ast.Expr) string {
	if len(stack) < 2 {
		return ""
	}
	switch p := stack[len(stack)-2].(type) {
	case *ast.KeyValueExpr:
		if p.Value == call {
			if id, ok := p.Key.(*ast.Ident); ok {
				return id.Name
			}
		}
	case *ast.AssignStmt:
		for i, r := range p.Rhs {
			if r == call && i < len(p.Lhs) && len(p.Lhs) == len(p.Rhs) {
				return lastIdent(p.Lhs[i])
			}
		}
	case *ast.ValueSpec:
		for i, r := range p.Values {
			if r == call && i < len(p.Names) {
				return p.Names[i].Name
			}
		}
	}
	return ""
}

// lastIdent is x of an identifier x or a selector a.b.x, else "".
func lastIdent(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.IndexExpr:
		return lastIdent(e.X)
	case *ast.ParenExpr:
		return lastIdent(e.X)
	case *ast.StarExpr:
		return lastIdent(e.X)
	}
	return ""
}

// definitions finds the metric constructors and the named children.
func (a *deadAnalysis) definitions(sf srcFile, report *DeadReport) {
	factories := descFactories(sf.f)
	inspectStack(sf.f, func(n ast.Node, stack []ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		kind := constructor(call)
		if kind == "" {
			if id, ok := call.Fun.(*ast.Ident); ok && factories[id.Name] {
				kind = "NewDesc"
			}
		}
		if kind == "" {
			return true
		}
		name := metricName(call, kind)
		if name == "" {
			if kind == "NewDesc" {
				return true // NewDesc inside a factory: its callers name the metric
			}
			report.Problems = append(report.Problems, fmt.Sprintf("%s: %s without a literal Name", a.pos(call), kind))
			return true
		}
		m := report.Metrics[name]
		if m == nil {
			m = &Metric{Name: name, Kind: kind, Pos: a.pos(call)}
			report.Metrics[name] = m
		}
		c := &collector{metric: m, pos: a.pos(call)}
		if b := bindingOf(stack, call); b != "" {
			c.binding = scope(sf.dir, b)
			a.byBinding[c.binding] = append(a.byBinding[c.binding], c)
		}
		a.collectors = append(a.collectors, c)
		return true
	})
}

// inspectStack is ast.Inspect over root with the path to each node: fn
// gets the node and its ancestors, the node last. A node whose fn returns
// false is left with its children unvisited.
func inspectStack(root ast.Node, fn func(n ast.Node, stack []ast.Node) bool) {
	var stack []ast.Node
	ast.Inspect(root, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		if !fn(n, stack) {
			stack = stack[:len(stack)-1] // no nil call follows a false
			return false
		}
		return true
	})
}

// enclosingFunc is the innermost function (declaration or literal) on the
// stack.
func enclosingFunc(stack []ast.Node) ast.Node {
	for i := len(stack) - 1; i >= 0; i-- {
		switch stack[i].(type) {
		case *ast.FuncDecl, *ast.FuncLit:
			return stack[i]
		}
	}
	return nil
}

// uses finds update calls, children and Collect methods' references.
func (a *deadAnalysis) uses(sf srcFile) {
	inspectStack(sf.f, func(n ast.Node, stack []ast.Node) bool {
		a.alias(sf.dir, n)
		if fd, ok := n.(*ast.FuncDecl); ok && fd.Name.Name == "Collect" && fd.Recv != nil && fd.Body != nil {
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok {
					a.descUsed[scope(sf.dir, id.Name)] = true
				}
				return true
			})
		}
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		switch {
		case updateMethods[sel.Sel.Name]:
			if inner, ok := sel.X.(*ast.CallExpr); ok {
				if is, ok := inner.Fun.(*ast.SelectorExpr); ok && childMethods[is.Sel.Name] {
					if name := lastIdent(is.X); name != "" {
						a.updates[scope(sf.dir, name)] = true
					}
				}
				return true
			}
			if name := lastIdent(sel.X); name != "" {
				a.updates[scope(sf.dir, name)] = true
			}
		case childMethods[sel.Sel.Name]:
			recv := lastIdent(sel.X)
			if recv == "" {
				return true
			}
			rs := scope(sf.dir, recv)
			lc := labelCall{recv: rs, args: call.Args, fn: enclosingFunc(stack), dir: sf.dir, pos: a.pos(call)}
			parent := stack[len(stack)-2]
			if _, ok := parent.(*ast.ExprStmt); ok {
				if sel.Sel.Name == "WithLabelValues" {
					a.preinit = append(a.preinit, lc)
				}
				return true
			}
			if sel.Sel.Name == "WithLabelValues" || sel.Sel.Name == "GetMetricWithLabelValues" {
				a.producing = append(a.producing, lc)
			} else {
				lc.args = nil // With(Labels): any values
				a.producing = append(a.producing, lc)
			}
			if ps, ok := parent.(*ast.SelectorExpr); ok && updateMethods[ps.Sel.Name] {
				return true // X.WithLabelValues(...).Inc(): counted above
			}
			if b := bindingOf(stack, call); b != "" {
				for _, pc := range a.byBinding[rs] {
					child := &collector{metric: pc.metric, binding: scope(sf.dir, b), parent: pc, pos: a.pos(call)}
					a.collectors = append(a.collectors, child)
				}
				return true
			}
			a.handedOut[rs] = true
		}
		return true
	})
}

// alias records a local name given the value of another name (c :=
// s.counters[k], for _, c := range s.counters).
func (a *deadAnalysis) alias(dir string, n ast.Node) {
	add := func(l, r ast.Expr) {
		id, ok := l.(*ast.Ident)
		if !ok {
			return
		}
		switch r.(type) {
		case *ast.Ident, *ast.SelectorExpr, *ast.IndexExpr:
			if t := lastIdent(r); t != "" {
				k := scope(dir, id.Name)
				a.aliases[k] = append(a.aliases[k], scope(dir, t))
			}
		}
	}
	switch n := n.(type) {
	case *ast.AssignStmt:
		if len(n.Lhs) == len(n.Rhs) {
			for i := range n.Lhs {
				add(n.Lhs[i], n.Rhs[i])
			}
		}
	case *ast.RangeStmt:
		if n.Value != nil {
			add(n.Value, n.X)
		}
	}
}

// checkPreinit reports each pre-initialised combination of label values
// that no producing call of the same collector can make.
func (a *deadAnalysis) checkPreinit() []string {
	var out []string
	for _, p := range a.preinit {
		if len(a.byBinding[p.recv]) == 0 {
			continue // not a metric of this module
		}
		tuples, ok := a.literalTuples(p)
		if !ok {
			out = append(out, fmt.Sprintf("%s: %s: pre-initialised label values that are neither literals nor a range over a literal list", p.pos, a.byBinding[p.recv][0].metric.Name))
			continue
		}
		for _, tu := range tuples {
			if !a.producible(p.recv, tu) {
				out = append(out, fmt.Sprintf("%s: %s: series %s is exported at start but no update produces it: it stays 0",
					p.pos, a.byBinding[p.recv][0].metric.Name, formatTuple(tu)))
			}
		}
	}
	return out
}

func formatTuple(tu []string) string {
	q := make([]string, len(tu))
	for i, v := range tu {
		q[i] = strconv.Quote(v)
	}
	return "{" + strings.Join(q, ",") + "}"
}

// literalTuples evaluates a pre-initialisation's arguments: string
// literals and constants, and values of an enclosing range over a literal
// list (r, or tk[0] of a list of lists).
func (a *deadAnalysis) literalTuples(p labelCall) ([][]string, bool) {
	if len(p.args) == 0 {
		return [][]string{{}}, true
	}
	var loop *ast.RangeStmt
	var rangeVar string
	if p.fn != nil {
		ast.Inspect(p.fn, func(n ast.Node) bool {
			rs, ok := n.(*ast.RangeStmt)
			if !ok || rs.Value == nil || rs.Body.Pos() > p.args[0].Pos() || rs.Body.End() < p.args[0].End() {
				return true
			}
			if id, ok := rs.Value.(*ast.Ident); ok {
				loop, rangeVar = rs, id.Name
			}
			return true
		})
	}
	var elems []ast.Expr
	if loop != nil {
		lit, ok := loop.X.(*ast.CompositeLit)
		if !ok {
			return nil, false
		}
		elems = lit.Elts
	}
	eval := func(e ast.Expr, elem ast.Expr) (string, bool) {
		if v, ok := a.constValue(e, p.dir); ok {
			return v, true
		}
		switch e := e.(type) {
		case *ast.Ident:
			if e.Name == rangeVar && elem != nil {
				return a.constValue(elem, p.dir)
			}
		case *ast.IndexExpr:
			id, ok := e.X.(*ast.Ident)
			idx, ok2 := e.Index.(*ast.BasicLit)
			if ok && ok2 && id.Name == rangeVar && elem != nil {
				i, err := strconv.Atoi(idx.Value)
				inner, ok := elem.(*ast.CompositeLit)
				if err == nil && ok && i < len(inner.Elts) {
					return a.constValue(inner.Elts[i], p.dir)
				}
			}
		}
		return "", false
	}
	one := func(elem ast.Expr) ([]string, bool) {
		tu := make([]string, len(p.args))
		for i, arg := range p.args {
			v, ok := eval(arg, elem)
			if !ok {
				return nil, false
			}
			tu[i] = v
		}
		return tu, true
	}
	if loop == nil {
		tu, ok := one(nil)
		return [][]string{tu}, ok
	}
	var out [][]string
	for _, el := range elems {
		tu, ok := one(el)
		if !ok {
			return nil, false
		}
		out = append(out, tu)
	}
	return out, true
}

// constValue is the value of a string literal or a string constant of the
// module (c, or pkg.C).
func (a *deadAnalysis) constValue(e ast.Expr, dir string) (string, bool) {
	if v, ok := stringLit(e); ok {
		return v, true
	}
	switch e := e.(type) {
	case *ast.Ident:
		v, ok := a.consts[scope(dir, e.Name)]
		return v, ok
	case *ast.SelectorExpr:
		if _, ok := e.X.(*ast.Ident); ok && ast.IsExported(e.Sel.Name) {
			v, ok := a.consts[scopedName{name: e.Sel.Name}]
			return v, ok
		}
	}
	return "", false
}

// producible reports whether some producing call on recv can make tuple.
func (a *deadAnalysis) producible(recv scopedName, tuple []string) bool {
	for _, c := range a.producing {
		if c.recv != recv {
			continue
		}
		if c.args == nil {
			return true
		}
		if len(c.args) != len(tuple) {
			continue
		}
		all := true
		for i, arg := range c.args {
			vals := a.values(arg, c.fn, c.dir, 4)
			if vals != nil && !vals[tuple[i]] {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// values returns the string constants e can hold, or nil for any value.
func (a *deadAnalysis) values(e ast.Expr, fn ast.Node, dir string, depth int) map[string]bool {
	if depth == 0 {
		return nil
	}
	if v, ok := a.constValue(e, dir); ok {
		return map[string]bool{v: true}
	}
	switch e := e.(type) {
	case *ast.ParenExpr:
		return a.values(e.X, fn, dir, depth)
	case *ast.CallExpr:
		return a.returned(e, 0, dir, depth-1)
	case *ast.Ident:
		return a.localValues(e.Name, fn, dir, depth)
	}
	return nil
}

// localValues resolves a local variable or parameter of fn.
func (a *deadAnalysis) localValues(name string, fn ast.Node, dir string, depth int) map[string]bool {
	if fn == nil {
		return nil
	}
	var params *ast.FieldList
	var body *ast.BlockStmt
	var fname string
	switch f := fn.(type) {
	case *ast.FuncDecl:
		params, body, fname = f.Type.Params, f.Body, f.Name.Name
	case *ast.FuncLit:
		params, body = f.Type.Params, f.Body
	}
	out := map[string]bool{}
	found, any := false, false
	add := func(vs map[string]bool) {
		found = true
		if vs == nil {
			any = true
		}
		for v := range vs {
			out[v] = true
		}
	}
	ast.Inspect(body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok {
			return true
		}
		for i, l := range as.Lhs {
			if id, ok := l.(*ast.Ident); !ok || id.Name != name {
				continue
			}
			switch {
			case len(as.Rhs) == len(as.Lhs):
				add(a.values(as.Rhs[i], fn, dir, depth-1))
			case len(as.Rhs) == 1:
				if c, ok := as.Rhs[0].(*ast.CallExpr); ok {
					add(a.returned(c, i, dir, depth-1))
				} else {
					add(nil)
				}
			}
		}
		return true
	})
	if params != nil && fname != "" {
		idx := 0
		for _, f := range params.List {
			for _, n := range f.Names {
				if n.Name == name {
					add(a.passed(fname, idx, dir, depth-1))
				}
				idx++
			}
		}
	}
	if !found || any {
		return nil
	}
	return out
}

// returned is what the module's function that c calls returns at result
// index i (its string-literal and constant results), or nil.
func (a *deadAnalysis) returned(c *ast.CallExpr, i int, dir string, depth int) map[string]bool {
	name := lastIdent(c.Fun)
	if name == "" || depth <= 0 {
		return nil
	}
	decls := a.funcs[scope(dir, name)]
	if len(decls) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, fd := range decls {
		if fd.Body == nil {
			return nil
		}
		ddir := filepath.Dir(a.fset.Position(fd.Pos()).Filename)
		ok := true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if _, lit := n.(*ast.FuncLit); lit {
				return false
			}
			r, isRet := n.(*ast.ReturnStmt)
			if !isRet || !ok {
				return ok
			}
			if i >= len(r.Results) {
				ok = false
				return false
			}
			vs := a.values(r.Results[i], fd, ddir, depth-1)
			if vs == nil {
				ok = false
				return false
			}
			for v := range vs {
				out[v] = true
			}
			return true
		})
		if !ok {
			return nil
		}
	}
	return out
}

// passed is what the callers of function fname pass as argument idx.
func (a *deadAnalysis) passed(fname string, idx int, dir string, depth int) map[string]bool {
	if depth <= 0 {
		return nil
	}
	out := map[string]bool{}
	found, any := false, false
	for _, sf := range a.files {
		if !ast.IsExported(fname) && sf.dir != dir {
			continue
		}
		inspectStack(sf.f, func(n ast.Node, stack []ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok || lastIdent(c.Fun) != fname || idx >= len(c.Args) {
				return true
			}
			found = true
			vs := a.values(c.Args[idx], enclosingFunc(stack), sf.dir, depth-1)
			if vs == nil {
				any = true
			}
			for v := range vs {
				out[v] = true
			}
			return true
		})
	}
	if !found || any {
		return nil
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(bl.Value)
	return v, err == nil
}

// AlwaysZero returns the families of prefix in body (a /metrics
// exposition) that have no non-zero sample: every counter and gauge at 0,
// every histogram and summary without an observation. Families named in
// allowZero are left out.
func AlwaysZero(body, prefix string, allowZero map[string]string) ([]string, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	var out []string
	for name, mf := range mfs {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if _, ok := allowZero[name]; ok {
			continue
		}
		nonZero := false
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				nonZero = nonZero || m.GetCounter().GetValue() != 0
			case m.GetGauge() != nil:
				nonZero = nonZero || m.GetGauge().GetValue() != 0
			case m.GetHistogram() != nil:
				nonZero = nonZero || m.GetHistogram().GetSampleCount() != 0
			case m.GetSummary() != nil:
				nonZero = nonZero || m.GetSummary().GetSampleCount() != 0
			case m.GetUntyped() != nil:
				nonZero = nonZero || m.GetUntyped().GetValue() != 0
			}
		}
		if !nonZero {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// CheckAlwaysZero fails t, after a live test's workload, for each family of
// prefix in body that is zero everywhere and not in allowZero, the events a
// healthy run leaves at zero (failures, refusals, drops; the value says
// why). So that the list cannot hide a dead metric, each name in it must
// be a metric that Dead finds live, with no problem, in the code under
// root (the service's module).
func CheckAlwaysZero(t testing.TB, body, prefix, root string, allowZero map[string]string) {
	t.Helper()
	zero, err := AlwaysZero(body, prefix, allowZero)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range zero {
		t.Errorf("%s is exported but zero after the workload: make the test exercise it, or, if a healthy run leaves it at zero, allow it (and show that it is updated)", name)
	}
	for _, p := range AllowListProblems(root, allowZero) {
		t.Error(p)
	}
}

// AllowListProblems checks an allow-list of CheckAlwaysZero: each name must
// have a reason and be defined, live and without a problem in the Dead
// report of root. (A name need not be exported: a Vec without children
// is not.)
func AllowListProblems(root string, allowZero map[string]string) []string {
	var out []string
	report, err := Dead(root)
	if err != nil {
		return []string{err.Error()}
	}
	names := make([]string, 0, len(allowZero))
	for n := range allowZero {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.TrimSpace(allowZero[name]) == "" {
			out = append(out, fmt.Sprintf("%s is allowed to stay zero without a reason", name))
		}
		m := report.Metrics[name]
		switch {
		case m == nil:
			out = append(out, fmt.Sprintf("%s is allowed to stay zero but no code under %s defines it", name, root))
		case !m.Live:
			out = append(out, fmt.Sprintf("%s is allowed to stay zero but nothing under %s updates it", name, root))
		}
		for _, p := range report.Problems {
			if strings.Contains(p, " "+name+":") || strings.Contains(p, " "+name+" ") {
				out = append(out, fmt.Sprintf("%s is allowed to stay zero but: %s", name, p))
			}
		}
	}
	return out
}
