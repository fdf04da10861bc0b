package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer is an io.Writer safe for concurrent use, for a logger whose
// output a test reads (a client's goroutines may log at any time).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
