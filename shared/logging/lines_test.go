package logging

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// lockedBuffer records every write to it as one.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) get() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.writes
}

// TestLinesOrderAndBatching: appended lines are written together, before
// any record written after them, so the output keeps the order of calls.
func TestLinesOrderAndBatching(t *testing.T) {
	var out lockedBuffer
	l := NewLines(&out, time.Hour)
	defer l.Close()
	l.Append([]byte("a1\n"))
	l.Append([]byte("a2\n"))
	if got, n := out.get(); got != "" || n != 0 {
		t.Fatalf("appended lines written at once: %q (%d writes)", got, n)
	}
	log := New(l, nil)
	log.Info("record")
	l.Append([]byte("a3\n"))
	got, n := out.get()
	if !strings.HasPrefix(got, "a1\na2\n{") || !strings.Contains(got, `"msg":"record"`) || strings.Contains(got, "a3") || n != 2 {
		t.Fatalf("output %q in %d writes: want a1, a2 in one write, then the record", got, n)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.get(); !strings.HasSuffix(got, "}\na3\n") {
		t.Fatalf("after Flush: %q", got)
	}
}

// TestLinesWrittenEveryInterval: buffered lines do not wait for the next
// record.
func TestLinesWrittenEveryInterval(t *testing.T) {
	var out lockedBuffer
	l := NewLines(&out, 20*time.Millisecond)
	defer l.Close()
	l.Append([]byte("line\n"))
	eventually.Within(t, 5*time.Second, func() error {
		if got, _ := out.get(); got != "line\n" {
			return fmt.Errorf("output %q", got)
		}
		return nil
	})
}

// TestLinesFullBufferWritten: a full buffer is written by the Append that
// fills it; Close writes the rest.
func TestLinesFullBufferWritten(t *testing.T) {
	var out lockedBuffer
	l := NewLines(&out, time.Hour)
	line := []byte(strings.Repeat("x", 1023) + "\n")
	for i := 0; i < DefaultLinesSize/len(line); i++ {
		l.Append(line)
	}
	if got, n := out.get(); len(got) != DefaultLinesSize || n != 1 {
		t.Fatalf("full buffer: %d bytes in %d writes, want %d in one", len(got), n, DefaultLinesSize)
	}
	l.Append([]byte("last\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.get(); !strings.HasSuffix(got, "x\nlast\n") {
		t.Fatalf("Close did not write the rest: ...%q", got[len(got)-10:])
	}
}

// TestLinesConcurrent: lines from many goroutines arrive whole, each once.
func TestLinesConcurrent(t *testing.T) {
	var out lockedBuffer
	l := NewLines(&out, time.Millisecond)
	log := New(l, nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if i%100 == 0 {
					log.Info("record", "g", g)
				} else {
					l.Append([]byte(fmt.Sprintf("g%d-%d\n", g, i)))
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := out.get()
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if seen[line] && !strings.HasPrefix(line, "{") {
			t.Fatalf("line %q twice", line)
		}
		seen[line] = true
	}
	for g := 0; g < 8; g++ {
		for i := 1; i < 2000; i++ {
			if i%100 != 0 && !seen[fmt.Sprintf("g%d-%d", g, i)] {
				t.Fatalf("line g%d-%d missing or torn", g, i)
			}
		}
	}
}

// TestLinesAppender: a logger writing through Appender buffers its
// records, written before the next record of a logger writing through
// Lines itself.
func TestLinesAppender(t *testing.T) {
	var out lockedBuffer
	l := NewLines(&out, time.Hour)
	defer l.Close()
	access, log := New(l.Appender(), nil), New(l, nil)
	access.Info("request", "n", 1)
	if got, _ := out.get(); got != "" {
		t.Fatalf("an appended record written at once: %q", got)
	}
	log.Warn("other")
	got, n := out.get()
	if i, j := strings.Index(got, `"msg":"request"`), strings.Index(got, `"msg":"other"`); i < 0 || j < i || n != 2 {
		t.Fatalf("output %q in %d writes: want the access record, then the other", got, n)
	}
}

// failingWriter fails its first write.
type failingWriter struct {
	lockedBuffer
	failed bool
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("write failed")
	}
	return f.lockedBuffer.Write(p)
}

// TestLinesWriteAfterFailedFlush: a record is written even when writing
// the lines buffered before it failed; the error is reported.
func TestLinesWriteAfterFailedFlush(t *testing.T) {
	var out failingWriter
	l := NewLines(&out, time.Hour)
	defer l.Close()
	l.Append([]byte("lost\n"))
	if _, err := l.Write([]byte("record\n")); err == nil {
		t.Fatal("the failed write of the buffered lines not reported")
	}
	if got, _ := out.get(); got != "record\n" {
		t.Fatalf("output %q: want the record", got)
	}
}
