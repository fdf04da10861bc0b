package nats

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsclient "github.com/nats-io/nats.go"
	"sigs.k8s.io/yaml"
)

// grants is what a configuration gives each user: its account, password
// and permissions.
type grants map[string]struct {
	Account, Password string
	Permissions       *server.Permissions
}

func usersOf(t *testing.T, opts *server.Options) grants {
	t.Helper()
	g := grants{}
	for _, u := range opts.Users {
		if u.Account == nil {
			t.Fatalf("user %s: in no account", u.Username)
		}
		g[u.Username] = struct {
			Account, Password string
			Permissions       *server.Permissions
		}{u.Account.Name, u.Password, u.Permissions}
	}
	return g
}

func setPasswords(t *testing.T) {
	t.Setenv("TOLLGATE_NATS_COREAPI_PASSWORD", "core-pw")
	t.Setenv("TOLLGATE_NATS_AUTHPROXY_PASSWORD", "proxy-pw")
}

// chartValue is how the Helm chart writes a "<< $VAR >>" string into the
// server's configuration: unquoted (nats.formatConfig).
var chartValue = regexp.MustCompile(`"<<\s+(.*)\s+>>"`)

// TestHelmValuesGrantWhatTheFileGrants renders helm-values.yaml's
// config.merge as the chart does (JSON, "<< $VAR >>" unquoted) and has
// nats-server read it: the users, their account, passwords and
// permissions are those of tollgate.conf, and the chart's container takes
// each password variable from a Secret.
func TestHelmValuesGrantWhatTheFileGrants(t *testing.T) {
	setPasswords(t)
	want, err := server.ProcessConfigFile("tollgate.conf")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("helm-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config struct {
			Merge map[string]any `json:"merge"`
		} `json:"config"`
		Container struct {
			Env map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
				} `json:"valueFrom"`
			} `json:"env"`
		} `json:"container"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	// toPrettyRawJson: "<", ">" and "&" as they are.
	var conf bytes.Buffer
	enc := json.NewEncoder(&conf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(values.Config.Merge); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, chartValue.ReplaceAll(conf.Bytes(), []byte("$1")), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the chart's configuration: %v", err)
	}
	if g, w := usersOf(t, got), usersOf(t, want); !reflect.DeepEqual(g, w) {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		t.Fatalf("helm-values.yaml grants\n%s\ntollgate.conf grants\n%s", gj, wj)
	}
	for _, v := range []string{"TOLLGATE_NATS_COREAPI_PASSWORD", "TOLLGATE_NATS_AUTHPROXY_PASSWORD"} {
		if ref := values.Container.Env[v].ValueFrom.SecretKeyRef; ref.Name == "" || ref.Key == "" {
			t.Errorf("container.env.%s: not from a Secret", v)
		}
	}
}

// TestPasswordsFromTheEnvironment: the server refuses to start without
// the password variables, and takes a bcrypt hash in them for the
// password it hashes (nats server passwd), so that the server's Secret
// need not hold the password itself.
func TestPasswordsFromTheEnvironment(t *testing.T) {
	for _, v := range []string{"TOLLGATE_NATS_COREAPI_PASSWORD", "TOLLGATE_NATS_AUTHPROXY_PASSWORD"} {
		t.Setenv(v, "") // restored when the test ends
		os.Unsetenv(v)
	}
	if _, err := server.ProcessConfigFile("tollgate.conf"); err == nil {
		t.Error("tollgate.conf read without its password variables")
	}
	setPasswords(t)
	// bcrypt of proxy-pw.
	t.Setenv("TOLLGATE_NATS_AUTHPROXY_PASSWORD", "$2a$04$21z3pjJyEyAh2JJzPyboLeTaQRAXjrXHOhcetUK4gg9eyK72M3FtW")
	opts, err := server.ProcessConfigFile("tollgate.conf")
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	for user, pw := range map[string]string{"authproxy": "proxy-pw", "coreapi": "core-pw"} {
		nc, err := natsclient.Connect("nats://"+user+":"+pw+"@"+ns.Addr().String(), natsclient.NoReconnect())
		if err != nil {
			t.Errorf("%s: %v", user, err)
			continue
		}
		nc.Close()
	}
}
