package yamldoc

import (
	"errors"
	"testing"
)

// TestSingle: one document, with or without empty ones around it, passes;
// a second one is ErrMany; a broken later one is its decoding error; a
// broken first one is left to the caller.
func TestSingle(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     func(error) bool
	}{
		{"empty", "", ok},
		{"one", "a: 1\n", ok},
		{"leading and trailing markers", "---\na: 1\n---\n", ok},
		{"two", "a: 1\n---\nb: 2\n", is(ErrMany)},
		{"broken second", "a: 1\n---\nb: [\n", other},
		{"broken first", "a: [\n", ok},
	} {
		if err := Single([]byte(tc.in)); !tc.want(err) {
			t.Errorf("%s: Single = %v", tc.name, err)
		}
	}
}

func ok(err error) bool              { return err == nil }
func other(err error) bool           { return err != nil && !errors.Is(err, ErrMany) }
func is(want error) func(error) bool { return func(err error) bool { return errors.Is(err, want) } }
