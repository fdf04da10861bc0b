package jwtclaims

import (
	"encoding/json"
	"testing"
)

func TestNumericDate(t *testing.T) {
	num := func(s string) *json.Number { n := json.Number(s); return &n }
	for _, c := range []struct {
		n    *json.Number
		want int64
		ok   bool
	}{
		{nil, 0, false},
		{num("1700000000"), 1700000000, true},
		{num("1700000000.9"), 1700000000, true},
		{num("0"), 0, false},
		{num("-5"), 0, false},
		{num("x"), 0, false},
		{num("1e300"), 0, false},
	} {
		if got, ok := NumericDate(c.n); got != c.want || ok != c.ok {
			t.Errorf("NumericDate(%v) = %d, %v; want %d, %v", c.n, got, ok, c.want, c.ok)
		}
	}
}

func TestHasAudience(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want bool
	}{
		{``, false},
		{`"api"`, true},
		{`"other"`, false},
		{`["x","api"]`, true},
		{`["x"]`, false},
		{`42`, false},
		{`[1]`, false},
	} {
		if got := HasAudience(json.RawMessage(c.raw), "api"); got != c.want {
			t.Errorf("HasAudience(%s) = %v, want %v", c.raw, got, c.want)
		}
	}
}
