package testenv

import "testing"

func TestWantHelpersSayWhatTheySaw(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string // "" for nil
	}{
		{Want("open streams", 0, 0), ""},
		{Want("open streams", 2, 0), "open streams = 2, want 0"},
		{Want("connected", false, true), "connected = false, want true"},
		{WantAtLeast("drops", 5, 5), ""},
		{WantAtLeast("drops", 4, 5), "drops = 4, want at least 5"},
		{WantAbove("generation", 2.0, 1.0), ""},
		{WantAbove("generation", 1.0, 1.0), "generation = 1, want more than 1"},
		{Contains("the log", "a b c", "a", "c"), ""},
		{Contains("the log", "a b c", "a", "d", "e"), `the log lacks "d"`},
	} {
		got := ""
		if c.err != nil {
			got = c.err.Error()
		}
		if got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}
