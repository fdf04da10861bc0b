package main

import (
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
