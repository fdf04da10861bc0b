package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// -only bodyhold: the memory authproxy gives connections that declare a
// body and send only part of it. Each connection sends a POST's headers
// declaring a body of MAX_BODY_BYTES (its default) and then the body's
// first bytes, and stops there, holding the connection open; the proxy's
// RSS and Go heap are read before and while they are held. Two variants:
// without any credential (8 KiB sent: what fasthttp reads ahead before
// the handler runs), and with a valid token (64 KiB sent: a body the
// proxy is reading for an allowed request). Each row runs on an authproxy
// started afresh for it, so that one row's freed memory, which the Go
// runtime returns to the system only gradually, is not the next row's
// baseline.

const (
	// bodyURI is a protected POST route to the synthetic upstream (as
	// short as the other routes' prefixes, so the route table's longest
	// prefix, which bounds every lookup, is unchanged).
	bodyURI = "/api/v1/body"
	// declaredBody is the Content-Length every held request declares:
	// authproxy's MAX_BODY_BYTES default, which the harness leaves as is.
	declaredBody = 1 << 20
	// bodySettle is how long the hold waits after the last connection
	// sent its bytes before reading the proxy's memory: well within
	// READ_TIMEOUT (30 s), after which the proxy would end them.
	bodySettle = 3 * time.Second
)

// bodyVariant is what each held connection sends.
type bodyVariant struct {
	name  string
	token bool // a valid bearer token (else no credential at all)
	sent  int  // body bytes sent after the headers, of declaredBody
}

var bodyVariants = []bodyVariant{
	{name: "no credential", sent: 8 << 10},
	{name: "valid token", token: true, sent: 64 << 10},
}

// rawBodyHead renders a POST of path on host declaring a body of declared
// bytes, followed by the body's first sent bytes; token "" sends no
// credential.
func rawBodyHead(host, path, token string, declared, sent int) []byte {
	b := make([]byte, 0, 256+len(token)+sent)
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: tollgate-loadtest\r\nContent-Type: application/octet-stream\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(declared), 10)
	b = append(b, "\r\n"...)
	if token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, token...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	for range sent {
		b = append(b, 'x')
	}
	return b
}

// bodyHold is what holding the connections found.
type bodyHold struct {
	target, established int
	// answered: connections on which the proxy had sent something (an
	// answer) when the memory was read; closed: those it had also ended.
	answered, closed int
	firstErr         string
}

// holdBodies opens n connections to addr, sends req(i) on connection i and
// nothing more, waits settle once all have sent, calls sample, and closes
// them. Each connection reads what the server sends meanwhile, to count
// the ones answered or closed by the time of the sample.
func holdBodies(ctx context.Context, addr string, n int, req func(i int) []byte, settle time.Duration, sample func()) bodyHold {
	res := bodyHold{target: n}
	var (
		wg, readers        sync.WaitGroup
		mu                 sync.Mutex
		conns              = make([]net.Conn, 0, n)
		answered, closed   = make([]atomic.Bool, n), make([]atomic.Bool, n)
		firstErr           atomic.Value
		sem                = make(chan struct{}, 256) // dials in flight
		established, fails atomic.Int64
	)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err = c.Write(req(i)); err != nil {
					c.Close()
				}
			}
			if err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			established.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			readers.Add(1)
			go func() {
				defer readers.Done()
				buf := make([]byte, 512)
				for {
					k, err := c.Read(buf)
					if k > 0 {
						answered[i].Store(true)
					}
					if err != nil {
						if !errors.Is(err, net.ErrClosed) { // not the harness's own Close
							closed[i].Store(true)
						}
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	res.established = int(established.Load())
	for i := range n {
		if answered[i].Load() {
			res.answered++
		}
		if closed[i].Load() {
			res.closed++
		}
	}
	sample()
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	if v := firstErr.Load(); v != nil {
		res.firstErr = fmt.Sprintf("%d failed, first: %s", fails.Load(), v)
	}
	return res
}

// bodyHoldRow is one binary's memory under one variant.
type bodyHoldRow struct {
	binary  string
	variant bodyVariant
	hold    bodyHold
	// RSS (KB) and Go heap in use (bytes; -1 unread) before the hold,
	// with the caches filled, and while the connections were held.
	rssBefore, rssHeld   int64
	heapBefore, heapHeld float64
	exited               bool // the proxy was gone when the memory was read
}

// runBodyHold is -only bodyhold: for each variant, authproxy from this
// tree and, with -proxy-b, the binary at that path, each started afresh,
// its caches filled with the warm users' tokens, then held n connections.
// Prints a table of the rows to w.
func (h *harness) runBodyHold(ctx context.Context, w io.Writer, n int) error {
	if err := h.startSynthetic(ctx); err != nil {
		return err
	}
	toks, err := h.minter.mintAll(h.warmUsers, len(h.warmUsers))
	if err != nil {
		return err
	}
	bins := [][2]string{{"this tree", filepath.Join(h.bin, "authproxy")}}
	if h.o.proxyB != "" {
		b, err := proxyBBinary(bins[0][1], h.o.proxyB)
		if err != nil {
			return err
		}
		bins = append(bins, [2]string{b, b})
	}
	var rows []bodyHoldRow
	for k, v := range bodyVariants {
		for _, bin := range bins {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := h.bodyHoldOne(ctx, fmt.Sprintf("authproxy-body%d-%d", k, len(rows)), bin, v, toks, n)
			if err != nil {
				return err
			}
			rows = append(rows, r)
		}
	}
	fmt.Fprint(w, bodyHoldTable(rows))
	return nil
}

// bodyHoldOne measures one binary under one variant on a process of its
// own, stopped afterwards.
func (h *harness) bodyHoldOne(ctx context.Context, name string, bin [2]string, v bodyVariant, toks []string, n int) (bodyHoldRow, error) {
	r := bodyHoldRow{binary: bin[0], variant: v}
	addr, admin := freeAddr(), freeAddr()
	p, err := h.start(name, append(h.proxyEnv(addr, admin, h.upstreamAddr), h.appEnv...), bin[1])
	if err != nil {
		return r, err
	}
	defer p.stop()
	if err := waitHTTP(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return r, fmt.Errorf("%s: %w (logs in %s)", name, err, h.work)
	}
	metrics := "http://" + admin + "/metrics"
	heap := func() float64 {
		if v, ok := scrape(metrics)["go_memstats_heap_inuse_bytes"]; ok {
			return v
		}
		return -1
	}
	// The caches filled as for any row, so the token variant's requests
	// are warm and both variants start from the same state.
	h.fillOnce(ctx, addr, render("bench", benchURI, toks))
	time.Sleep(2 * time.Second) // the caches admit asynchronously
	r.rssBefore, r.heapBefore = rssKB(p.pid()), heap()
	reqs := make([][]byte, len(toks))
	for i, t := range toks {
		if !v.token {
			t = ""
		}
		reqs[i] = rawBodyHead("bench", bodyURI, t, declaredBody, v.sent)
		if !v.token {
			reqs = reqs[:1]
			break
		}
	}
	h.logf("%s (%s): holding %d connections, %s, %d of %d body bytes sent", name, bin[0], n, v.name, v.sent, declaredBody)
	r.hold = holdBodies(ctx, addr, n, func(i int) []byte { return reqs[i%len(reqs)] }, bodySettle, func() {
		r.rssHeld, r.heapHeld = rssKB(p.pid()), heap()
		r.exited = p.Exited()
	})
	h.logf("%s: %d/%d connections, %d answered, %d closed; RSS %d → %d KB, heap %.0f → %.0f MiB%s",
		name, r.hold.established, n, r.hold.answered, r.hold.closed, r.rssBefore, r.rssHeld, r.heapBefore/(1<<20), r.heapHeld/(1<<20), exitedNote(r.exited))
	return r, nil
}

func exitedNote(exited bool) string {
	if exited {
		return " (the proxy had exited)"
	}
	return ""
}

// bodyHoldTable renders the rows as a markdown table.
func bodyHoldTable(rows []bodyHoldRow) string {
	mib := func(kb int64) string {
		if kb < 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
	}
	heap := func(b float64) string {
		if b < 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	}
	s := "| authproxy | credential | body sent of declared | connections open | answered / closed | RSS before | RSS held | RSS per connection | Go heap before | Go heap held |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n"
	for _, r := range rows {
		per := "–"
		if r.rssBefore >= 0 && r.rssHeld >= 0 && r.hold.established > 0 && !r.exited {
			per = fmt.Sprintf("%.1f KiB", float64(r.rssHeld-r.rssBefore)/float64(r.hold.established))
		}
		held := mib(r.rssHeld)
		if r.exited {
			held = "exited"
		}
		s += fmt.Sprintf("| %s | %s | %d KiB of %d KiB | %d/%d | %d / %d | %s | %s | %s | %s | %s |\n",
			r.binary, r.variant.name, r.variant.sent>>10, declaredBody>>10, r.hold.established, r.hold.target,
			r.hold.answered, r.hold.closed, mib(r.rssBefore), held, per, heap(r.heapBefore), heap(r.heapHeld))
		if r.hold.firstErr != "" {
			s += fmt.Sprintf("\n(%s, %s: connections %s)\n\n", r.binary, r.variant.name, r.hold.firstErr)
		}
	}
	return s
}
