package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
)

// TestWithAppName: the name is set (replacing one already there) and the
// rest of the URL is kept.
func TestWithAppName(t *testing.T) {
	for _, in := range []string{
		"postgres://postgres@127.0.0.1:5432/bench_1?sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/bench_1?sslmode=disable&application_name=old",
	} {
		got, err := withAppName(in, "coreapi-b")
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if q.Get("application_name") != "coreapi-b" || len(q["application_name"]) != 1 || q.Get("sslmode") != "disable" ||
			u.Host != "127.0.0.1:5432" || u.Path != "/bench_1" || u.User.Username() != "postgres" {
			t.Fatalf("withAppName(%s) = %s", in, got)
		}
	}
	if _, err := withAppName("postgres://a b:%zz@x/", "n"); err == nil {
		t.Fatal("a bad URL: no error")
	}
}

// TestCoreBNeedsStackOnly: the comparison runs on the stack alone, and the
// two stack flags exclude each other.
func TestCoreBNeedsStackOnly(t *testing.T) {
	for args, want := range map[string]string{
		"-coreapi-b /x":                         "-coreapi-b needs -stack-only",
		"-stack-only -skip-stack":               "exclude each other",
		"-stack-only -coreapi-b /x -skip-stack": "exclude each other",
		"-only paired -rounds 0":                "needs at least one round",
		"-only users -rounds -1":                "needs at least one round",
		"-only nothing":                         "unknown -only",
		"-only openloop -rounds 0":              "needs at least one round",
		"-placement both":                       "-placement both needs -only openloop",
		"-only paired -placement both":          "-placement both needs -only openloop",
		"-paired-alone":                         "-paired-alone needs -only paired",
		"-proxy-b tree":                         "-proxy-b needs -only paired",
		"-proxy-b copy":                         "-proxy-b needs -only paired",
		"-only paired -proxy-b /nonexistent/ap": "not an executable file",
		"-only paired -proxy-b /":               "not an executable file",
		"-only openloop -placement elsewhere":   "unknown -placement",
		"-stack-only -ab-rate 3000":             "-ab-rate 3000: needs -coreapi-b",
		"-stack-only -coreapi-b /x -ab-rate -5": "-ab-rate -5: needs -coreapi-b and a rate above 0",
		"-core-rss -only held":                  "-core-rss runs alone",
		"-core-rss -rss-users 10":               "-core-rss runs alone",
		"-core-rss -stack-only":                 "-core-rss runs alone",
		"-core-rss -core-members 10":            "-core-members 10: at least 200",
		"-core-rss -core-rss-for 0s":            "-core-rss-for 0s: above 0",
		"-core-rss -core-sign-ins -1":           "-core-sign-ins -1: not below 0",
		"-core-rss -core-gomaxprocs 0":          "-core-gomaxprocs 0: at least 1",
		"-core-sign-ins 10":                     "-core-sign-ins needs -core-rss",
	} {
		err := run(context.Background(), strings.Fields(args), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}
