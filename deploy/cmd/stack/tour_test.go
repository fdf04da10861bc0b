package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestPrintTourNamesBothUsers: the printed tour gives the member's
// credentials as well as the admin's (the tour signs in as both), and the
// ids it uses.
func TestPrintTourNamesBothUsers(t *testing.T) {
	o := options{email: "admin@example.com", password: "pw-" + randHex(4), memberEmail: "member-" + randHex(4) + "@example.com",
		coreAddr: "127.0.0.1:8081", coreAdmin: "127.0.0.1:9091", proxyAddr: "127.0.0.1:8080", proxyAdmin: "127.0.0.1:9090",
		notesAddr: "127.0.0.1:8082", database: "tollgate"}
	d := demo{TenantID: "t-" + randHex(4), AdminID: "a-" + randHex(4), MemberID: "m-" + randHex(4)}
	var b strings.Builder
	printTour(&b, d, o, "nats://127.0.0.1:4222")
	s := b.String()
	for _, want := range []string{
		"admin  " + o.email + " / " + o.password,
		"member " + o.memberEmail + " / " + o.password + " (id " + d.MemberID + ")",
		"tenant " + d.TenantID,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("tour lacks %q:\n%s", want, s)
		}
	}
	if m := memberRe.FindStringSubmatch(s); m == nil || m[1] != d.MemberID {
		t.Errorf("the member line does not parse as TestRunTwice reads it: %v", m)
	}
}

// TestTourWithUserApps: with the user's route table or permission catalog
// in place of the example's (README, "Protect your own service"), the
// printed tour leaves out the example's /notes steps, which would answer
// 404 (no such route) or 422 and 403 (no notes permission in the catalog),
// and names the files that route the proxy instead. The example's keys
// replaced alone change nothing: the example's rules still route /notes.
func TestTourWithUserApps(t *testing.T) {
	o := options{email: "admin@example.com", password: "pw", memberEmail: "member@example.com",
		coreAddr: "127.0.0.1:8081", coreAdmin: "127.0.0.1:9091", proxyAddr: "127.0.0.1:8080", proxyAdmin: "127.0.0.1:9090",
		notesAddr: "127.0.0.1:8082", database: "tollgate"}
	d := demo{TenantID: "t-1", AdminID: "a-1", MemberID: "m-1"}
	// A command (not a comment) that calls the example app through the proxy.
	notesCall := regexp.MustCompile(`(?m)^[^#\n]*http://localhost:8080/notes`)
	for _, tc := range []struct {
		name  string
		env   map[string]string
		notes bool
		names []string
	}{
		{name: "the example's", notes: true},
		{name: "the user's keys only", env: map[string]string{"UPSTREAM_KEYS_FILE": "my-app.keys"}, notes: true},
		{name: "the user's files", env: map[string]string{"RULES_FILE": "my-rules.yaml", "PERMISSIONS_FILE": "my-permissions.yaml", "UPSTREAM_KEYS_FILE": "my-app.keys"},
			names: []string{"RULES_FILE=my-rules.yaml", "PERMISSIONS_FILE=my-permissions.yaml"}},
		{name: "the user's rules", env: map[string]string{"RULES_FILE": "/srv/rules.yaml"}, names: []string{"RULES_FILE=/srv/rules.yaml"}},
		{name: "the user's inline catalog", env: map[string]string{"PERMISSIONS": "permissions: []"}, names: []string{"PERMISSIONS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			o.userApps = userApps(func(k string) string { return tc.env[k] })
			var b strings.Builder
			printTour(&b, d, o, "nats://127.0.0.1:4222")
			s := b.String()
			if got := notesCall.MatchString(s); got != tc.notes {
				t.Errorf("the tour calls /notes through the proxy: %v, want %v:\n%s", got, tc.notes, s)
			}
			if got := strings.Contains(s, "(example app, /notes)"); got != tc.notes {
				t.Errorf("the tour shows the example app behind the proxy: %v, want %v:\n%s", got, tc.notes, s)
			}
			for _, n := range tc.names {
				if !strings.Contains(s, n) {
					t.Errorf("the tour does not name %s:\n%s", n, s)
				}
			}
			if m := memberRe.FindStringSubmatch(s); m == nil || m[1] != d.MemberID {
				t.Errorf("the member line does not parse as TestRunTwice reads it: %v", m)
			}
		})
	}
}
