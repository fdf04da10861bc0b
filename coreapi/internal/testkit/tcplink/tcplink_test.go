package tcplink

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// echo is a server that answers each line with the same line, and
// returns its address and a channel that gets the remote port of each
// connection it accepts.
func echo(t *testing.T) (string, <-chan int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ports := make(chan int, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ports <- c.RemoteAddr().(*net.TCPAddr).Port
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String(), ports
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, l *Link) *client {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// say sends line and returns what comes back within wait, or the error.
func (c *client) say(line string, wait time.Duration) (string, error) {
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		return "", err
	}
	return c.read(wait)
}

func (c *client) read(wait time.Duration) (string, error) {
	if err := c.c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

const (
	answered = 5 * time.Second
	// quiet is how long a silent connection is watched for an answer
	// that must not come.
	quiet = 200 * time.Millisecond
)

func passes(t *testing.T, c *client, line string) {
	t.Helper()
	if got, err := c.say(line, answered); err != nil || got != line {
		t.Fatalf("say %q: got %q, %v; want it echoed", line, got, err)
	}
}

func silent(t *testing.T, c *client, line string) {
	t.Helper()
	if got, err := c.say(line, quiet); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("say %q on a silent connection: got %q, %v; want no answer", line, got, err)
	}
}

func closed(t *testing.T, c *client) {
	t.Helper()
	if got, err := c.read(answered); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a dropped connection: got %q, %v; want EOF", got, err)
	}
}

func refused(t *testing.T, l *Link) {
	t.Helper()
	if c, err := net.Dial("tcp", l.Addr()); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted, want refused")
	}
}

func TestSilenceAndFreeze(t *testing.T) {
	target, _ := echo(t)
	l := New(t, target)
	a := dial(t, l)
	passes(t, a, "a1")
	l.Silence()
	silent(t, a, "a2")
	b := dial(t, l)
	passes(t, b, "b1") // made after Silence: passes

	l.Freeze()
	silent(t, b, "b2")
	c := dial(t, l)
	silent(t, c, "c1") // made after Freeze: silent too
	l.Thaw()
	silent(t, c, "c2") // frozen stays silent
	passes(t, dial(t, l), "d1")
}

func TestSilenceFrom(t *testing.T) {
	target, ports := echo(t)
	l := New(t, target)
	a, b := dial(t, l), dial(t, l)
	passes(t, a, "a1")
	first := <-ports
	passes(t, b, "b1")
	<-ports
	if l.SilenceFrom(1) {
		t.Fatal("SilenceFrom(1) found a connection")
	}
	if !l.SilenceFrom(first) {
		t.Fatalf("SilenceFrom(%d) found no connection", first)
	}
	silent(t, a, "a2")
	passes(t, b, "b2")
}

func TestHoldAndRelease(t *testing.T) {
	target, _ := echo(t)
	l := New(t, target)
	a := dial(t, l)
	passes(t, a, "a1")
	l.Hold()
	silent(t, a, "a2")
	if _, err := io.WriteString(a.c, "a3\n"); err != nil {
		t.Fatal(err)
	}
	l.Release()
	for _, want := range []string{"a2", "a3"} {
		if got, err := a.read(answered); err != nil || got != want {
			t.Fatalf("after Release: got %q, %v; want %q", got, err, want)
		}
	}
}

func TestDropCutRefuseNewRestore(t *testing.T) {
	target, _ := echo(t)
	l := New(t, target)
	a := dial(t, l)
	passes(t, a, "a1")
	l.Drop()
	closed(t, a)
	b := dial(t, l)
	passes(t, b, "b1") // Drop keeps listening

	l.RefuseNew()
	refused(t, l)
	passes(t, b, "b2") // open ones still pass
	l.Restore(t)
	c := dial(t, l)
	passes(t, c, "c1")

	l.Cut()
	closed(t, b)
	closed(t, c)
	refused(t, l)
	l.Restore(t)
	passes(t, dial(t, l), "d1")
}
