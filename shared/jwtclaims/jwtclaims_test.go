package jwtclaims

import (
	"encoding/json"
	"testing"
)

func TestNumericDate(t *testing.T) {
	num := func(s string) *json.Number { n := json.Number(s); return &n }
	for _, tc := range []struct {
		in   *json.Number
		want int64
		ok   bool
	}{
		{nil, 0, false},
		{num("1764608400"), 1764608400, true},
		{num("1764608400.9"), 1764608400, true},
		{num("0"), 0, false},
		{num("-5"), 0, false},
		{num("1e300"), 0, false},
		{num("NaN"), 0, false},
		{num("x"), 0, false},
	} {
		got, ok := NumericDate(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NumericDate(%v) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHasAudience(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{`"tollgate"`, true},
		{`"other"`, false},
		{`["a","tollgate"]`, true},
		{`["a","b"]`, false},
		{`[]`, false},
		{`5`, false},
		{``, false},
		{`[1,"tollgate"]`, false},
	} {
		if got := HasAudience(json.RawMessage(tc.raw), "tollgate"); got != tc.want {
			t.Errorf("HasAudience(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
