package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/shared/tracing/otlptest"
)

// traceViewer receives the services' spans over OTLP/HTTP (make run
// TRACES=1) and prints each trace as an indented tree once it has been
// quiet for a second: a look at the proxy → core → SQL path without
// installing a collector.
type traceViewer struct {
	r     *otlptest.Receiver
	out   io.Writer
	quiet time.Duration
	stop  context.CancelFunc
	done  chan struct{}
}

// startTraceViewer listens on addr and prints to out until close.
func startTraceViewer(addr string, out io.Writer) (*traceViewer, error) {
	r, err := otlptest.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("trace viewer on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &traceViewer{r: r, out: out, quiet: time.Second, stop: cancel, done: make(chan struct{})}
	go v.loop(ctx)
	return v, nil
}

// url is the OTEL_EXPORTER_OTLP_ENDPOINT of the services.
func (v *traceViewer) url() string { return v.r.URL() }

// close prints what is pending and stops.
func (v *traceViewer) close() {
	v.stop()
	<-v.done
	_ = v.r.Close()
}

func (v *traceViewer) loop(ctx context.Context) {
	defer close(v.done)
	pending := map[string][]otlptest.Span{}
	last := map[string]time.Time{}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var final bool
		select {
		case <-ctx.Done():
			final = true
		case <-tick.C:
		}
		now := time.Now()
		for _, s := range v.r.Take() {
			pending[s.TraceID] = append(pending[s.TraceID], s)
			last[s.TraceID] = now
		}
		var ready []string
		for id, t := range last {
			if final || now.Sub(t) >= v.quiet {
				ready = append(ready, id)
			}
		}
		slices.SortFunc(ready, func(a, b string) int { return pending[a][0].Start.Compare(pending[b][0].Start) })
		for _, id := range ready {
			_, _ = io.WriteString(v.out, renderTrace(pending[id]))
			delete(pending, id)
			delete(last, id)
		}
		if final {
			return
		}
	}
}

// renderTrace draws one trace: a header with its id, then each span under
// its parent (children by start time), with its service and duration.
func renderTrace(spans []otlptest.Span) string {
	byID := map[string]bool{}
	for _, s := range spans {
		byID[s.SpanID] = true
	}
	children := map[string][]otlptest.Span{}
	var roots []otlptest.Span
	for _, s := range spans {
		if s.ParentSpanID == "" || !byID[s.ParentSpanID] {
			roots = append(roots, s)
		} else {
			children[s.ParentSpanID] = append(children[s.ParentSpanID], s)
		}
	}
	byStart := func(a, b otlptest.Span) int { return a.Start.Compare(b.Start) }
	slices.SortFunc(roots, byStart)
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s (%d spans)\n", spans[0].TraceID, len(spans))
	var walk func(s otlptest.Span, depth int)
	walk = func(s otlptest.Span, depth int) {
		extra := ""
		if st := s.Attrs["http.response.status_code"]; st != "" {
			extra = " → " + st
		}
		fmt.Fprintf(&b, "  %s%-*s %-9s %8.2f ms%s\n", strings.Repeat("  ", depth), max(40-2*depth, 1), s.Name, s.Service,
			float64(s.End.Sub(s.Start).Microseconds())/1000, extra)
		kids := children[s.SpanID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
