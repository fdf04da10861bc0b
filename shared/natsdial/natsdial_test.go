package natsdial

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestDialerRefusesEachAddressOnce: the first dial of an address (the pass
// nats.Connect makes before it returns) is refused without reaching it;
// the next dials of that address are made.
func TestDialerRefusesEachAddressOnce(t *testing.T) {
	var lns []net.Listener
	accepted := make(chan string, 8)
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
				accepted <- ln.Addr().String()
			}
		}()
	}
	d := New(0)
	for _, ln := range lns {
		if c, err := d.Dial("tcp", ln.Addr().String()); !errors.Is(err, ErrNotYet) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("first dial of %s = %v, want ErrNotYet", ln.Addr(), err)
		}
	}
	for _, ln := range lns {
		for range 2 {
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("later dial of %s: %v", ln.Addr(), err)
			}
			c.Close()
			if got := <-accepted; got != ln.Addr().String() {
				t.Fatalf("accepted on %s, want %s: a first dial got through", got, ln.Addr())
			}
		}
	}
	select {
	case got := <-accepted:
		t.Fatalf("one more connection accepted on %s: a first dial got through", got)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestDelayFirstNone: the reconnect loop's first wait, right after the
// refused pass, is none; every later one is the wrapped wait's.
func TestDelayFirstNone(t *testing.T) {
	d := New(0)
	delay := d.Delay(func(attempts int) time.Duration { return time.Duration(attempts) * time.Second })
	for i, want := range []time.Duration{0, 2 * time.Second, time.Second, 3 * time.Second} {
		attempts := []int{1, 2, 1, 3}[i]
		if got := delay(attempts); got != want {
			t.Errorf("call %d, delay(%d) = %v, want %v", i+1, attempts, got, want)
		}
	}
}
