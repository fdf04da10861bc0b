package notes_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/deploy/examples/notes"
)

// The rules file format of authproxy (RULES_FILE), as far as this example
// uses it. Decoding is strict: a misspelt field fails.
type rulesFile struct {
	Upstreams map[string]struct {
		URL   string `json:"url"`
		KeyID string `json:"key_id"`
	} `json:"upstreams"`
	Routes []struct {
		Prefix        string   `json:"prefix"`
		Methods       []string `json:"methods"`
		Upstream      string   `json:"upstream"`
		Access        string   `json:"access"`
		Permissions   []string `json:"permissions"`
		Websocket     bool     `json:"websocket"`
		StreamTimeout string   `json:"stream_timeout"`
	} `json:"routes"`
}

type catalogFile struct {
	Permissions []struct {
		Name          string `json:"name"`
		Description   string `json:"description"`
		MemberDefault bool   `json:"member_default"`
	} `json:"permissions"`
}

func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestRulesFile keeps rules.yaml in step with the service: the upstream is
// the command's default address, and each route requires the permission
// the handler checks.
func TestRulesFile(t *testing.T) {
	var f rulesFile
	decodeStrict(t, "rules.yaml", &f)
	up, ok := f.Upstreams["notes"]
	if len(f.Upstreams) != 1 || !ok || up.URL != "http://127.0.0.1:8082" || up.KeyID != "app-notes" {
		t.Fatalf("upstreams = %+v, want notes → http://127.0.0.1:8082 with key_id app-notes", f.Upstreams)
	}
	type route struct {
		methods, perms string
		websocket      bool
		streamTimeout  string
	}
	got := map[string]route{}
	for _, r := range f.Routes {
		if !strings.HasPrefix(r.Prefix, "/notes") || r.Upstream != "notes" || r.Access != "protected" {
			t.Errorf("route %+v: want prefix /notes..., upstream notes, access protected", r)
		}
		if len(r.Methods) == 0 {
			t.Errorf("route %+v: no methods", r)
			continue
		}
		got[r.Prefix+" "+r.Methods[0]] = route{methods: joined(r.Methods), perms: joined(r.Permissions),
			websocket: r.Websocket, streamTimeout: r.StreamTimeout}
	}
	want := map[string]route{
		"/notes GET":  {methods: "GET,HEAD", perms: notes.PermRead},
		"/notes POST": {methods: "POST", perms: notes.PermWrite},
		// Longer than the heartbeat, so a healthy stream is never cut.
		"/notes/events GET": {methods: "GET", perms: notes.PermRead, streamTimeout: "60s"},
		"/notes/ws GET":     {methods: "GET", perms: notes.PermRead, websocket: true},
	}
	if len(got) != len(want) {
		t.Fatalf("routes = %+v, want %+v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("route %s = %+v, want %+v", k, got[k], w)
		}
	}
	if d, err := time.ParseDuration(got["/notes/events GET"].streamTimeout); err != nil || d <= notes.Heartbeat {
		t.Errorf("stream_timeout %v (%v) must exceed the heartbeat %v", d, err, notes.Heartbeat)
	}
}

func joined(l []string) string { return strings.Join(l, ",") }

var permName = regexp.MustCompile(`^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$`)

func TestPermissionCatalog(t *testing.T) {
	var f catalogFile
	decodeStrict(t, "permissions.yaml", &f)
	got := map[string]bool{}
	for _, p := range f.Permissions {
		if !permName.MatchString(p.Name) || p.Description == "" {
			t.Errorf("permission %+v: bad name or no description", p)
		}
		got[p.Name] = p.MemberDefault
	}
	want := map[string]bool{notes.PermRead: true, notes.PermWrite: false}
	if len(got) != len(want) || got[notes.PermRead] != true || got[notes.PermWrite] != false {
		t.Fatalf("catalog member_default = %v, want %v", got, want)
	}
}
