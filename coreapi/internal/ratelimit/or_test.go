package ratelimit

import (
	"testing"
	"time"
)

func TestLimitOr(t *testing.T) {
	def := Limit{N: 5, Window: time.Hour}
	for _, tc := range []struct {
		l, want Limit
	}{
		{Limit{}, def},
		{Limit{N: 3}, def},
		{Limit{Window: time.Minute}, def},
		{Limit{N: -1, Window: time.Minute}, def},
		{Limit{N: 3, Window: time.Minute}, Limit{N: 3, Window: time.Minute}},
	} {
		if got := tc.l.Or(def); got != tc.want {
			t.Errorf("%+v.Or(%+v) = %+v, want %+v", tc.l, def, got, tc.want)
		}
	}
}
