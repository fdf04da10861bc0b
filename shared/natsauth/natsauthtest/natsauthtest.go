// Package natsauthtest reads, for the tests of every module, what
// natsauth and natsreach log about a NATS connection: the lines of a
// refusal of the credentials, and the lines that name a server's URL.
package natsauthtest

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// RefusalLines counts the lines of logs that name a refusal of the
// credentials, those of them at error level saying what to fix, and the
// lines that say a refusal ended.
func RefusalLines(logs *logbuffer.Buffer) (refusals, errs, ended int) {
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(strings.ToLower(line), "authorization violation") {
			refusals++
			if strings.Contains(line, `"level":"ERROR"`) && strings.Contains(line, "NATS_URL") {
				errs++
			}
		}
		if strings.Contains(line, "admits this service's credentials again") {
			ended++
		}
	}
	return refusals, errs, ended
}

// URLLines counts the lines of logs that name url at warning or error
// level, and at info level; none may hold the password "pw" of the
// tests' URLs.
func URLLines(t testing.TB, logs *logbuffer.Buffer, url string) (warns, infos int) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, ":pw@") {
			t.Fatalf("a line holds the password: %s", line)
		}
		if !strings.Contains(line, `"url":"`+url+`"`) {
			continue
		}
		switch {
		case strings.Contains(line, `"level":"WARN"`), strings.Contains(line, `"level":"ERROR"`):
			warns++
		case strings.Contains(line, `"level":"INFO"`):
			infos++
		}
	}
	return warns, infos
}
