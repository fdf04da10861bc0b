package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Spans sent by the real exporter to -traces' receiver come out as one
// tree per trace: the header with the trace id, each span under its
// parent, the status of server spans.
func TestTraceViewerPrintsTrees(t *testing.T) {
	var out bytes.Buffer
	w := &lockedWriter{w: &out}
	v, err := startTraceViewer("127.0.0.1:0", w)
	if err != nil {
		t.Fatal(err)
	}
	v.quiet = 100 * time.Millisecond
	defer v.close()
	c, err := tracing.Load(func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": v.url()}[k]
	}, "authproxy")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.New(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := p.Tracer("test")
	ctx, root := tr.Start(context.Background(), "GET /api/v1/users")
	root.SetAttributes(attribute.Int("http.response.status_code", 200))
	cctx, child := tr.Start(ctx, "projection")
	_, grand := tr.Start(cctx, "SELECT")
	grand.End()
	child.End()
	root.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var text string
	for {
		w.mu.Lock()
		text = out.String()
		w.mu.Unlock()
		if strings.Contains(text, "SELECT") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != 4 || lines[0] != "trace "+root.SpanContext().TraceID().String()+" (3 spans)" {
		t.Fatalf("printed:\n%s", text)
	}
	for i, want := range []string{"  GET /api/v1/users", "    projection", "      SELECT"} {
		if !strings.HasPrefix(lines[i+1], want) || !strings.Contains(lines[i+1], "authproxy") || !strings.Contains(lines[i+1], " ms") {
			t.Errorf("line %d = %q, want it to start with %q and name the service and duration", i+1, lines[i+1], want)
		}
	}
	if !strings.HasSuffix(lines[1], "→ 200") {
		t.Errorf("root line %q lacks the status", lines[1])
	}
}
