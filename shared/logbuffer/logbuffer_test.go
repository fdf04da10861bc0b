package logbuffer_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// Writes from several goroutines at once all land, whole.
func TestConcurrentWrites(t *testing.T) {
	var b logbuffer.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				fmt.Fprintf(&b, "line %d %d\n", i, j)
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "line ") || strings.Count(l, " ") != 2 {
			t.Fatalf("torn line %q", l)
		}
	}
}
