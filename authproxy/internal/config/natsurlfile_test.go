package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// TestNATSURLFile: NATS_URL, which holds the proxy's NATS password, is
// read from the file NATS_URL_FILE names (a mounted Secret), the trailing
// newline trimmed, checked as NATS_URL is, and printed masked; NATS_URL and
// NATS_URL_FILE together, a file that cannot be read, an empty one or one
// over secretfile.MaxSize stop the start naming NATS_URL_FILE, and a file
// open to other users is warned about.
func TestNATSURLFile(t *testing.T) {
	const good = "nats://authproxy:nats-s3cret@nats:4222"
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m := map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_URL_FILE": write("url", good+"\n", 0o440)}
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("NATS_URL_FILE: Load() = %v", err)
	}
	if c.NATSURL != good || len(c.Warnings) != 0 {
		t.Errorf("NATS_URL = %q, warnings %q; want %q and none", c.NATSURL, c.Warnings, good)
	}
	if s := c.String(); strings.Contains(s, "nats-s3cret") || !strings.Contains(s, "NATS_URL_FILE="+m["NATS_URL_FILE"]+"\n") ||
		!strings.Contains(s, "NATS_URL=nats://authproxy:xxxxx@nats:4222\n") {
		t.Errorf("printout shows the password, or not the file and the masked URL:\n%s", s)
	}

	both := map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_URL": good, "NATS_URL_FILE": m["NATS_URL_FILE"]}
	if _, err := Load(env(both)); err == nil || !strings.Contains(err.Error(), "NATS_URL / NATS_URL_FILE: set one, not both") {
		t.Errorf("NATS_URL and NATS_URL_FILE together: Load() = %v", err)
	}
	for what, path := range map[string]string{
		"missing": filepath.Join(dir, "missing"),
		"empty":   write("empty", "\n", 0o440),
		"too big": write("big", good+strings.Repeat("\n", secretfile.MaxSize), 0o440),
		"refused": write("bad", "http://authproxy:nats-s3cret@nats:4222\n", 0o440),
	} {
		m["NATS_URL_FILE"] = path
		_, err := Load(env(m))
		if err == nil || !strings.Contains(err.Error(), "NATS_URL_FILE "+path+": ") {
			t.Errorf("%s file: Load() = %v, want a problem naming NATS_URL_FILE and the file", what, err)
		} else if strings.Contains(err.Error(), "nats-s3cret") {
			t.Errorf("%s file: the problem shows the password: %v", what, err)
		}
	}
	m["NATS_URL_FILE"] = write("open", good+"\n", 0o644)
	c, err = Load(env(m))
	if err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "NATS_URL_FILE: "+m["NATS_URL_FILE"]+" ") {
		t.Errorf("NATS_URL_FILE open to others: warnings %q, %v; want one naming it", c.Warnings, err)
	}
}
