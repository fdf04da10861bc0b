package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// measureRSS measures the memory an authproxy process needs at its default
// cache budget: the RSS when its token and projection caches hold users
// distinct users (more than the budget fits, so they are full), and again
// with conns idle keep-alive connections open on top, each having served
// one warm request. It prints the figures and returns.
func (h *harness) measureRSS(ctx context.Context, users, conns int, out io.Writer) error {
	if err := h.startSynthetic(ctx); err != nil {
		return err
	}
	pid, admin := h.proxy.pid(), "http://"+h.proxyAdmin+"/metrics"
	idle := rssKB(pid)
	us := h.warmUsers
	for len(us) < users {
		us = append(us, h.manyUsers...)
	}
	us = us[:users]
	h.logf("minting %d tokens", users)
	toks, err := h.minter.mintAll(us, users)
	if err != nil {
		return err
	}
	reqs := render(h.proxyAddr, benchURI, toks)
	h.logf("filling the caches")
	var next, fails atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", h.proxyAddr)
			if err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 4096)
			var resp fasthttp.Response
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= int64(len(reqs)) {
					return
				}
				_, err := conn.Write(reqs[k])
				if err == nil {
					resp.Reset()
					err = resp.Read(br)
				}
				if err != nil || resp.StatusCode() != 200 {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, %v", resp.StatusCode(), err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := fails.Load(); n > 0 {
		return fmt.Errorf("filling the caches: %d failures, first: %v", n, firstErr.Load())
	}
	time.Sleep(2 * time.Second) // the caches admit asynchronously
	m := scrape(admin)
	filled := rssKB(pid)
	h.logf("caches filled: RSS %d KB", filled)

	h.logf("opening %d idle keep-alive connections", conns)
	held := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var resp fasthttp.Response
	for i := 0; i < conns && ctx.Err() == nil; i++ {
		c, err := net.DialTimeout("tcp", h.proxyAddr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		held = append(held, c)
		// A warm request (a token already cached), so the connection has
		// been through the whole request path.
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(reqs[i%len(reqs)]); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		resp.Reset()
		if err := resp.Read(bufio.NewReaderSize(c, 4096)); err != nil || resp.StatusCode() != 200 {
			return fmt.Errorf("connection %d: status %d, %v", i, resp.StatusCode(), err)
		}
		_ = c.SetDeadline(time.Time{})
	}
	time.Sleep(2 * time.Second)
	withConns := rssKB(pid)
	h.logf("with %d connections: RSS %d KB", len(held), withConns)

	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	fmt.Fprintf(out, "authproxy RSS at its default cache budget (%d distinct users sent, %d idle keep-alive connections)\n", users, len(held))
	fmt.Fprintf(out, "| state | RSS |\n|---|---|\n")
	fmt.Fprintf(out, "| ready, caches empty | %.0f MiB |\n", mib(idle))
	fmt.Fprintf(out, "| caches filled | %.0f MiB |\n", mib(filled))
	fmt.Fprintf(out, "| caches filled + %d idle connections | %.0f MiB |\n", len(held), mib(withConns))
	for _, c := range []string{"token", "projection"} {
		l := `{cache="` + c + `"}`
		fmt.Fprintf(out, "cache %s: %.0f entries, %.1f of %.1f MiB charged, %.0f evictions\n", c,
			m["authproxy_cache_entries"+l], m["authproxy_cache_cost_bytes"+l]/(1<<20), m["authproxy_cache_budget_bytes"+l]/(1<<20),
			m["authproxy_cache_evictions_total"+l])
	}
	fmt.Fprintf(out, "Go heap in use: %.0f MiB\n", m["go_memstats_heap_inuse_bytes"]/(1<<20))
	return nil
}
