package envconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var table = Table{
	{Name: "ADDR", Default: ":8080"},
	{Name: "TTL", Default: "15m"},
	{Name: "N", Default: "4"},
	{Name: "ON", Default: "true"},
	{Name: "DB_URL", Required: true, Mask: URL, Commands: []string{"migrate"}},
	{Name: "PASSWORD", Mask: Secret},
	{Name: "KEYS", Mask: KeyList, OneOf: "keys"},
	{Name: "P_<NAME>_X"},
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestReadDefaultsAndValues(t *testing.T) {
	r := table.Read(env(map[string]string{"ADDR": " 127.0.0.1:1\n", "N": "7\n", "PASSWORD": "hunter2\n",
		"DB_URL": "postgres://u:pw@h/db\n", "KEYS": "a:c2VjcmV0,b:c2VjcmV0\n", "P_GOOGLE_X": "y"}))
	if got := r.String("ADDR"); got != "127.0.0.1:1" {
		t.Errorf("ADDR = %q (the newline must go)", got)
	}
	if got := r.Duration("TTL", 0, 0); got != 15*time.Minute {
		t.Errorf("TTL = %s, want the table's 15m", got)
	}
	if got := r.Int("N", 1, 0, 0); got != 7 {
		t.Errorf("N = %d", got)
	}
	if !r.Bool("ON") {
		t.Error("ON: the table's default true lost")
	}
	if got := r.String("PASSWORD"); got != "hunter2" {
		t.Errorf("PASSWORD = %q", got)
	}
	r.String("DB_URL")
	r.String("KEYS")
	r.String("P_GOOGLE_X")
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	out := r.Printout().String()
	want := "ADDR=127.0.0.1:1\nTTL=15m0s\nN=7\nON=true\nDB_URL=postgres://u:xxxxx@h/db\nPASSWORD=********\nKEYS=a:********,b:********\nP_GOOGLE_X=y\n"
	if out != want {
		t.Errorf("printout:\n%s\nwant:\n%s", out, want)
	}
	for _, secret := range []string{"hunter2", "pw@", "c2VjcmV0"} {
		if strings.Contains(out, secret) {
			t.Errorf("printout shows %s", secret)
		}
	}
}

func TestReadReportsEveryProblem(t *testing.T) {
	r := table.Read(env(map[string]string{"TTL": "soon", "N": "0", "ON": "maybe"}))
	r.Duration("TTL", 0, 0)
	r.Int("N", 1, 0, 0)
	r.Bool("ON")
	r.String("NOT_IN_TABLE")
	r2 := table.Read(env(map[string]string{"TTL": "30m"}))
	if d := r2.Duration("TTL", time.Hour, 0); d != 15*time.Minute || r2.Err() == nil || !strings.Contains(r2.Err().Error(), "TTL: 30m0s is below the minimum of 1h0m0s") {
		t.Errorf("TTL = %s, err = %v", d, r2.Err())
	}
	err := r.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"TTL: want a duration", "N: 0 is below the minimum of 1", "ON: want true or false", "NOT_IN_TABLE: read but not in the configuration table"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestDurationMax(t *testing.T) {
	r := table.Read(env(map[string]string{"TTL": "2m"}))
	if d := r.Duration("TTL", 0, time.Minute); d != 15*time.Minute || r.Err() == nil || !strings.Contains(r.Err().Error(), "above the maximum of 1m0s") {
		t.Fatalf("TTL = %s, err = %v", d, r.Err())
	}
}

func TestReadBy(t *testing.T) {
	db, _ := table.Lookup("DB_URL")
	ttl, _ := table.Lookup("TTL")
	if !db.ReadBy("migrate") || !db.ReadBy("serve") || ttl.ReadBy("migrate") || !ttl.ReadBy("serve") {
		t.Fatal("ReadBy wrong")
	}
	if _, ok := table.Lookup("P_X"); ok {
		t.Fatal("P_X matched the template P_<NAME>_X")
	}
}

func TestCheckDoc(t *testing.T) {
	doc := "# x\n### svc\n\ntext\n\n| Variable | Default | Meaning |\n|---|---|---|\n" +
		"| `ADDR` | `:8080` | a |\n| `TTL` | `900s` | b |\n| `N` | `4` | c |\n| `ON` | `true` | d |\n" +
		"| `DB_URL` | — (required) | e |\n| `PASSWORD` | empty | f |\n| `KEYS` | — (one required) | g |\n| `P_<NAME>_X` | — | h |\n\nafter\n"
	rows, err := ParseDocTable(doc, "### svc")
	if err != nil {
		t.Fatal(err)
	}
	if d := table.CheckDoc(rows); len(d) != 0 {
		t.Fatalf("differences in a matching table: %q", d)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"| `TTL` | `900s` |", "| `TTL` | `10m` |", "TTL: documented default"},
		{"| `ADDR` | `:8080` | a |\n", "", "ADDR is in the configuration table but not documented"},
		{"| `N` | `4` | c |\n", "| `N` | `4` | c |\n| `EXTRA` | — | x |\n", "EXTRA is documented but not in the configuration table"},
		{"| `DB_URL` | — (required) |", "| `DB_URL` | — |", "DB_URL: documented as required = false"},
		{"| `PASSWORD` | empty |", "| `PASSWORD` | `x` |", "PASSWORD: documented default \"x\", the table has none"},
		{"| `N` | `4` | c |\n", "| `N` | `4` | c |\n| `N` | `4` | c, again |\n", "N is documented twice"},
	} {
		rows, err := ParseDocTable(strings.Replace(doc, tc.from, tc.to, 1), "### svc")
		if err != nil {
			t.Fatal(err)
		}
		d := table.CheckDoc(rows)
		if len(d) != 1 || !strings.Contains(d[0], tc.want) {
			t.Errorf("%q → %q: differences %q, want one with %q", tc.from, tc.to, d, tc.want)
		}
	}
}

// CheckDocFile reads, parses and checks a file's table, refusing a parse
// that finds fewer rows than the caller expects.
func TestCheckDocFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ops.md")
	doc := "### svc\n| variable | default | meaning |\n|---|---|---|\n| `TTL` | `5m` | b |\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := table.CheckDocFile(path, "### svc", false, 1)
	if err != nil || len(d) != 1 || !strings.HasPrefix(d[0], "ops.md: TTL: documented default") {
		t.Fatalf("a wrong default: %q, %v", d, err)
	}
	if d, err := table.CheckDocFile(path, "### svc", true, 1); err != nil || len(d) < 2 {
		t.Fatalf("as a complete table: %q, %v; want the missing variables too", d, err)
	}
	if _, err := table.CheckDocFile(path, "### svc", false, 2); err == nil || !strings.Contains(err.Error(), "has 1 rows") {
		t.Fatalf("fewer rows than expected: %v", err)
	}
	if _, err := table.CheckDocFile(filepath.Join(t.TempDir(), "none.md"), "### svc", false, 1); err == nil {
		t.Fatal("a missing file accepted")
	}
}

func TestCheckDocRows(t *testing.T) {
	doc := "### svc\n| variable | default | meaning |\n|---|---|---|\n| `TTL` | `15m` | b |\n"
	rows, err := ParseDocTable(doc, "### svc")
	if err != nil {
		t.Fatal(err)
	}
	if d := table.CheckDocRows(rows); len(d) != 0 {
		t.Fatalf("a correct selection: %q", d)
	}
	if d := table.CheckDoc(rows); len(d) == 0 {
		t.Fatal("CheckDoc accepted a table that lacks variables")
	}
	rows, _ = ParseDocTable(strings.Replace(doc, "`15m`", "`5m`", 1), "### svc")
	if d := table.CheckDocRows(rows); len(d) != 1 || !strings.Contains(d[0], "TTL: documented default") {
		t.Fatalf("a wrong default in a selection: %q", d)
	}
}

// TestURLMaskHidesEveryCredential: a URL's credential may be its password,
// a password given as a query parameter (libpq and pgx read
// ?password= and ?sslpassword=), an API key, authorization value or
// signature in the query (as hosted OTLP collectors and storage take
// them), or, for NATS, a token written as the user name alone; the
// printout keeps none of them.
func TestURLMaskHidesEveryCredential(t *testing.T) {
	for _, tc := range []struct{ in, want, secret string }{
		{"postgres://u:pw1secret@h/db", "postgres://u:xxxxx@h/db", "pw1secret"},
		{"postgres://u@h/db?sslmode=require&password=pw2secret", "postgres://u@h/db?password=xxxxx&sslmode=require", "pw2secret"},
		{"postgres://u@h/db?sslpassword=pw3secret", "postgres://u@h/db?sslpassword=xxxxx", "pw3secret"},
		{"nats://tok4secret@nats:4222", "nats://xxxxx@nats:4222", "tok4secret"},
		{"tls://tok5secret@nats:4222", "tls://xxxxx@nats:4222", "tok5secret"},
		{"smtp://u:pw6secret@mail:587?starttls=required", "smtp://u:xxxxx@mail:587?starttls=required", "pw6secret"},
		{"https://collector/v1/traces?api-key=k7secret", "https://collector/v1/traces?api-key=xxxxx", "k7secret"},
		{"https://collector/v1/traces?apikey=k8secret", "https://collector/v1/traces?apikey=xxxxx", "k8secret"},
		{"https://collector/v1/traces?Authorization=Bearer+k9secret", "https://collector/v1/traces?Authorization=xxxxx", "k9secret"},
		{"https://store/v1/traces?sv=2022&sig=k10secret", "https://store/v1/traces?sig=xxxxx&sv=2022", "k10secret"},
		{"postgres://u@h/db?sslmode=disable", "postgres://u@h/db?sslmode=disable", ""},
		// Slashes missing, or one too many: the password is no user
		// information the parser finds, but printed it would still be.
		{"postgres:u:pw11secret@h:5432/db", Masked, "pw11secret"},
		{"postgres:/u:pw12secret@h/db", Masked, "pw12secret"},
		{"postgres:///u:pw13secret@h/db", Masked, "pw13secret"},
		// A '/', '?' or '#' left unescaped in the password: the parser
		// ends the authority there, and the rest of the password is the
		// path, the query or the fragment.
		{"postgres://u:12/pw14secret@h/db", Masked, "pw14secret"},
		{"postgres://u:12?pw15secret@h/db", Masked, "pw15secret"},
		{"postgres://u:12#pw16secret@h/db", Masked, "pw16secret"},
		{"nats://tok?17secret@nats:4222", Masked, "17secret"},
	} {
		got := mask(URL, tc.in)
		if got != tc.want {
			t.Errorf("mask(%s) = %s, want %s", tc.in, got, tc.want)
		}
		if tc.secret != "" && strings.Contains(got, tc.secret) {
			t.Errorf("mask(%s) shows %s", tc.in, tc.secret)
		}
	}
}

// TestProblemURL: a refused URL is quoted with its user information and
// query replaced, parsable or not, and the rest as written.
func TestProblemURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:pw@core:8081/api":         "http://xxxxx@core:8081/api",
		"http://tok@core:8081":              "http://xxxxx@core:8081",
		"http://u:p%zz@core:8081":           "http://xxxxx@core:8081",
		"http://core:8081?token=t#frag":     "http://core:8081?xxxxx#frag",
		"127.0.0.1:8081":                    "127.0.0.1:8081",
		"app.example.com":                   "app.example.com",
		"https://keys@auth.example/a@b?x=y": "https://xxxxx@b?xxxxx",
		// A '/', '?' or '#' left unescaped in the password ends the
		// authority before the '@'.
		"postgres://u:12?pw@h/db":           "postgres://xxxxx@h/db",
		"postgres://u:12/pw@h/db?x=y":       "postgres://xxxxx@h/db?xxxxx",
		"postgres://u:12#pw@h/db":           "postgres://xxxxx@h/db",
		"nats://to?ken@h:4222":              "nats://xxxxx@h:4222",
		"http://core:8081/p#f?token=t":      "http://core:8081/p#f?xxxxx",
		"postgres:u:pw@h:5432/db":           "xxxxx@h:5432/db",
		"postgres:/u:pw@h/db?x=y":           "xxxxx@h/db?xxxxx",
		"postgres:///u:pw@h/db":             "postgres://xxxxx@h/db",
		"postgres:/u:pw@h/db?next=http://x": "xxxxx@h/db?xxxxx",
	} {
		if got := ProblemURL(in); got != want {
			t.Errorf("ProblemURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestListenAddr: an address net.Listen would refuse (no port, a port that
// is not a number or above 65535) is a problem; :port and port 0 are not.
func TestListenAddr(t *testing.T) {
	table := Table{{Name: "ADDR"}}
	for v, ok := range map[string]bool{":8080": true, "127.0.0.1:0": true, "[::1]:9090": true, "0.0.0.0:65535": true,
		"8080": false, ":": false, ":http": false, ":99999": false, ":-1": false, "host:8080:1": false} {
		r := table.Read(func(string) string { return v })
		r.ListenAddr("ADDR")
		if got := r.Err() == nil; got != ok {
			t.Errorf("ListenAddr(%q): accepted = %v, want %v (%v)", v, got, ok, r.Err())
		}
	}
}

// TestSameListener: two listeners on one port clash when they share the
// host or either takes every address; port 0 never clashes.
func TestSameListener(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{":9090", ":9090", true},
		{":9090", "127.0.0.1:9090", true},
		{"0.0.0.0:9091", "127.0.0.1:09091", true},
		{"[::]:8080", "10.0.0.1:8080", true},
		{"127.0.0.1:8081", "127.0.0.1:8081", true},
		{"LOCALHOST:8081", "localhost:8081", true},
		{"127.0.0.1:8081", "127.0.0.1:9091", false},
		{"127.0.0.1:8081", "10.0.0.1:8081", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{":0", ":0", false},
		{"nonsense", ":8080", false},
	} {
		if got := SameListener(tc.a, tc.b); got != tc.same {
			t.Errorf("SameListener(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// TestStringOrFile: a value read from the file name_FILE names, trimmed,
// shown masked as the variable's; the default when neither is set; the two
// together, a missing file and an empty one are problems naming the file.
func TestStringOrFile(t *testing.T) {
	tbl := Table{{Name: "U", Default: "nats://h:4222", Mask: URL}, {Name: "U_FILE"}}
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	empty := filepath.Join(dir, "empty")
	for p, text := range map[string]string{good: "nats://u:pw@h:4222\r\n", empty: " \n"} {
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		env                 map[string]string
		value, source, want string
		ok                  bool
	}{
		{map[string]string{}, "nats://h:4222", "U", "", true},
		{map[string]string{"U": "nats://x:4222"}, "nats://x:4222", "U", "", true},
		{map[string]string{"U_FILE": good}, "nats://u:pw@h:4222", "U_FILE " + good, "", true},
		{map[string]string{"U_FILE": good, "U": "nats://x:4222"}, "", "U_FILE " + good, "U / U_FILE: set one, not both", false},
		{map[string]string{"U_FILE": empty}, "", "U_FILE " + empty, "U_FILE " + empty + ": empty", false},
		{map[string]string{"U_FILE": filepath.Join(dir, "none")}, "", "U_FILE " + filepath.Join(dir, "none"),
			"U_FILE " + filepath.Join(dir, "none") + ": no such file or directory", false},
	} {
		r := tbl.Read(env(tc.env))
		v, src, ok := r.StringOrFile("U")
		if v != tc.value || src != tc.source || ok != tc.ok {
			t.Errorf("%v: StringOrFile = %q, %q, %v; want %q, %q, %v", tc.env, v, src, ok, tc.value, tc.source, tc.ok)
		}
		if p := strings.Join(r.Problems(), "\n"); p != tc.want {
			t.Errorf("%v: problems %q, want %q", tc.env, p, tc.want)
		}
		if tc.ok && tc.env["U_FILE"] != "" && !strings.Contains(r.Printout().String(), "U=nats://u:xxxxx@h:4222\nU_FILE="+good+"\n") {
			t.Errorf("printout:\n%s", r.Printout())
		}
	}
}
