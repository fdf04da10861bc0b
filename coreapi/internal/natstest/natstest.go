// Package natstest runs a real nats-server in-process for tests (the
// approach of nats-server's own test/test.go): on 127.0.0.1, a free port
// unless one is given, optionally with JetStream, shut down when the test
// ends.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Start runs a server on port (-1: a free one); a non-empty storeDir
// enables JetStream storing there.
func Start(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true}
	if storeDir != "" {
		opts.JetStream, opts.StoreDir = true, storeDir
	}
	return StartWith(t, opts)
}

// StartWith runs a server with opts as they are (users and their
// permissions, a cluster), shut down when the test ends.
func StartWith(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect opens a client connection that reconnects quickly and forever,
// closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
