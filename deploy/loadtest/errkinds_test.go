package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestStatusKind(t *testing.T) {
	for _, tt := range []struct {
		status   int
		ct, body string
		want     string
	}{
		{503, "application/problem+json", `{"status":503,"code":"upstream_unavailable","detail":"upstream unavailable"}`, "503 upstream_unavailable (upstream unavailable)"},
		{401, "application/problem+json; charset=utf-8", `{"code":"invalid_token"}`, "401 invalid_token"},
		{502, "text/plain", "bad", "502 Bad Gateway"},
		{503, "application/problem+json", `not json`, "503 Service Unavailable"},
	} {
		if got := statusKind(tt.status, []byte(tt.ct), []byte(tt.body)); got != tt.want {
			t.Errorf("statusKind(%d, %q, %q) = %q, want %q", tt.status, tt.ct, tt.body, got, tt.want)
		}
	}
}

func TestTransportKind(t *testing.T) {
	op := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Err: &os.SyscallError{Syscall: op, Err: err}}
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{op("read", syscall.ECONNRESET), "transport: connection reset"},
		{op("dial", syscall.ECONNREFUSED), "transport: connection refused"},
		{op("write", syscall.EPIPE), "transport: broken pipe"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "transport: timeout"},
		{io.EOF, "transport: closed by the server"},
		{fasthttp.ErrTimeout, "transport: timeout"},
		{op("dial", syscall.EMFILE), "transport: too many open files"},
	} {
		if got := transportKind(tt.err); got != tt.want {
			t.Errorf("transportKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	var k errKinds
	for _, s := range []string{"b", "a", "b"} {
		k.add(s)
	}
	if got := formatKinds(k.counts()); got != "2 × b; 1 × a" {
		t.Errorf("counts = %q", got)
	}
}
