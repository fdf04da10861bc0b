// Package testkit holds coreapi's test helpers that are not about the
// database or the API: waiting for something asynchronous (a relay, a
// watcher, a background loop) and collecting a log written concurrently.
package testkit

import (
	"bytes"
	"sync"
)

// LogBuffer is an io.Writer safe for concurrent use, for a logger whose
// output a test reads (or prints when it fails).
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
