package logging

import (
	"io"
	"sync"
	"time"
)

// Lines is a log's output shared by lines written at once (Write: the
// logger's records) and lines buffered to be written together (Append: a
// proxy's access lines, one per request, where a write system call each
// would cost more than the request's own work). Every write to the
// underlying writer goes through one lock and carries whole lines, so a
// pipe (a container's stdout) never receives two writers' bytes
// interleaved, and the buffered lines are written before any line that
// comes after them: the output keeps the order of the calls.
//
// Buffered lines are written when they reach the buffer's size, before
// the next Write, every interval, and by Flush and Close; a process that
// is killed loses at most an interval's lines.
type Lines struct {
	w    io.Writer
	size int

	wmu sync.Mutex // held while writing to w
	mu  sync.Mutex // guards buf
	buf []byte
	out []byte // written outside mu; owned by the holder of wmu

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// DefaultLinesSize is the buffer size of NewLines: lines reaching it are
// written at once.
const DefaultLinesSize = 64 << 10

// NewLines returns a Lines writing to w, its buffered lines written at
// least every interval.
func NewLines(w io.Writer, interval time.Duration) *Lines {
	l := &Lines{w: w, size: DefaultLinesSize, buf: make([]byte, 0, DefaultLinesSize), out: make([]byte, 0, DefaultLinesSize),
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.flusher(interval)
	return l
}

func (l *Lines) flusher(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.Flush()
		}
	}
}

// Append buffers line (one or more whole lines, each ending in '\n'); it
// is copied. When the buffer is full the lines are written before Append
// returns, so a writer that cannot keep up slows its callers rather than
// growing the buffer.
func (l *Lines) Append(line []byte) {
	l.mu.Lock()
	l.buf = append(l.buf, line...)
	full := len(l.buf) >= l.size
	l.mu.Unlock()
	if full {
		_ = l.Flush()
	}
}

// Appender is an io.Writer that appends what it is given (a logger's
// records: whole lines) to l's buffer: a logger of access lines writes
// through it, the service's other logger through l itself.
func (l *Lines) Appender() io.Writer { return appender{l} }

type appender struct{ l *Lines }

func (a appender) Write(p []byte) (int, error) {
	a.l.Append(p)
	return len(p), nil
}

// Write writes p at once, after the lines buffered before it. p is
// written even when writing those failed (they are dropped, as a logger
// drops a record it could not write), and the first error is returned.
func (l *Lines) Write(p []byte) (int, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	berr := l.writeBuffered()
	n, err := l.w.Write(p)
	if berr != nil {
		return n, berr
	}
	return n, err
}

// Flush writes the buffered lines.
func (l *Lines) Flush() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.writeBuffered()
}

// writeBuffered swaps the buffer out and writes it, with wmu held: lines
// appended meanwhile go to the other buffer.
func (l *Lines) writeBuffered() error {
	l.mu.Lock()
	l.buf, l.out = l.out[:0], l.buf
	l.mu.Unlock()
	if len(l.out) == 0 {
		return nil
	}
	_, err := l.w.Write(l.out)
	if cap(l.out) > 4*l.size { // a burst grew it: do not keep it
		l.out = make([]byte, 0, l.size)
	}
	return err
}

// Close stops the periodic writes and writes what is buffered. Lines
// appended after Close are written by the next Flush or Write only.
func (l *Lines) Close() error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	return l.Flush()
}
