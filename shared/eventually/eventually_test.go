package eventually_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func run(d time.Duration, cond func() error) (failed string) {
	f := &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
		failed = f.failed
	}()
	eventually.Within(f, d, cond)
	return ""
}

func TestWithinReturnsOnceCondHolds(t *testing.T) {
	calls := 0
	if failed := run(5*time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); failed != "" || calls != 3 {
		t.Errorf("failed %q after %d calls, want success on the 3rd", failed, calls)
	}
}

func TestWithinReportsTheLastError(t *testing.T) {
	calls := 0
	failed := run(30*time.Millisecond, func() error {
		calls++
		return fmt.Errorf("seen %d", calls)
	})
	if !strings.Contains(failed, fmt.Sprintf("seen %d", calls)) || !strings.Contains(failed, "30ms") {
		t.Errorf("failure = %q, want the last error (seen %d) and the wait", failed, calls)
	}
}
