package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// load describes one closed-loop run: conns workers, each on its own
// keep-alive connection, each sending its next request as soon as the
// previous response has been read.
type load struct {
	addr     string
	conns    int
	warmup   time.Duration
	duration time.Duration
	// request returns the raw HTTP/1.1 request bytes worker w sends as its
	// i-th request. It must be cheap: pre-render requests.
	request func(w, i int) []byte
	// want is the expected status code; anything else counts as an error.
	want int
	// onStart and onEnd, if set, run when the measured window opens and
	// closes (e.g. to scrape counters so warm-up work is not counted).
	onStart, onEnd func()
	// rate, when set, makes the run open-loop: requests are due at this
	// fixed rate (per second) whatever the answers, each sent by the next
	// free connection, and a latency is measured from when the request was
	// due, so time spent waiting for a free connection counts (no
	// coordinated omission).
	rate float64
	// keep makes the result carry every latency of the measured window
	// (result.Latencies), for pooling the slices of one row.
	keep bool
	// timeout bounds each request (0: defaultRequestTimeout).
	timeout time.Duration
}

func (l load) requestTimeout() time.Duration {
	if l.timeout > 0 {
		return l.timeout
	}
	return defaultRequestTimeout
}

// result is what one run measured, during the measured window only.
type result struct {
	// Requests are the requests answered with the wanted status: the
	// throughput, the CPU per request and the percentiles are theirs. A
	// request that failed (no answer, an error, a timeout, another status)
	// is counted in Errors instead, never as one served.
	Requests int64
	Errors   int64
	// Elapsed is the measured window; in an open-loop run, until the last
	// of the window's requests was answered when that came later.
	Elapsed  time.Duration
	RPS      float64
	P50, P99 time.Duration
	Max      time.Duration
	// FirstErr describes the first error seen, for the report.
	FirstErr string
	// Kinds counts the errors by kind, most frequent first.
	Kinds []kindCount
	// Latencies are the measured requests' latencies in µs, sorted; only
	// with load.keep.
	Latencies []uint32
}

// defaultRequestTimeout bounds each request: a closed-loop request from when it
// is sent, an open-loop one from when it was due.
const defaultRequestTimeout = 10 * time.Second

// errLate is an open-loop request that was still waiting for a free
// connection when it had been due for its timeout: it would have timed
// out had it been sent.
var errLate = errors.New("not sent within the request timeout of its due time (no free connection)")

// tally counts a run's outcomes.
type tally struct {
	mu       sync.Mutex
	all      []uint32 // latencies of the requests answered as wanted, µs
	ok, errs atomic.Int64
	firstErr atomic.Value
	kinds    errKinds
}

func (t *tally) fail(err error, kind string) {
	t.errs.Add(1)
	t.firstErr.CompareAndSwap(nil, err.Error())
	t.kinds.add(kind)
}

// outcome files one measured request: err from sending it and reading the
// answer, resp the answer, d its latency. It reports whether the request
// was answered with the wanted status.
func (t *tally) outcome(err error, resp *fasthttp.Response, want int, d time.Duration, lat *[]uint32) bool {
	switch {
	case err != nil:
		t.fail(err, transportKind(err))
	case resp.StatusCode() != want:
		t.fail(errors.New("status "+fasthttp.StatusMessage(resp.StatusCode())+": "+string(truncate(resp.Body(), 200))), responseKind(resp))
	default:
		t.ok.Add(1)
		*lat = append(*lat, uint32(min(d.Microseconds(), 1<<31)))
		return true
	}
	return false
}

func (t *tally) merge(lat []uint32) {
	t.mu.Lock()
	t.all = append(t.all, lat...)
	t.mu.Unlock()
}

// result is the tally as a result over elapsed.
func (t *tally) result(elapsed time.Duration, keep bool) result {
	r := result{Requests: t.ok.Load(), Errors: t.errs.Load(), Elapsed: elapsed, Kinds: t.kinds.counts()}
	if v := t.firstErr.Load(); v != nil {
		r.FirstErr = v.(string)
	}
	if elapsed > 0 {
		r.RPS = float64(r.Requests) / elapsed.Seconds()
	}
	r.P50, r.P99, r.Max = percentiles(t.all)
	if keep {
		r.Latencies = t.all
	}
	return r
}

// rawConn is one worker's keep-alive connection.
type rawConn struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	resp fasthttp.Response
}

func (c *rawConn) dial() error {
	c.close()
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return err
	}
	c.conn, c.br = conn, bufio.NewReaderSize(conn, 16<<10)
	return nil
}

func (c *rawConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// do sends req on the connection and reads the answer into c.resp, by
// deadline. The connection is closed after a transport error or an answer
// that closes it.
func (c *rawConn) do(req []byte, deadline time.Time) error {
	_ = c.conn.SetDeadline(deadline)
	_, err := c.conn.Write(req)
	if err == nil {
		c.resp.Reset()
		err = c.resp.Read(c.br)
	}
	if err != nil || c.resp.ConnectionClose() {
		c.close()
	}
	return err
}

func (l load) run(ctx context.Context) result {
	if l.rate > 0 {
		return l.runOpen(ctx)
	}
	return l.runClosed(ctx)
}

// runClosed is the closed loop: a request counts when it completes inside
// the measured window.
func (l load) runClosed(ctx context.Context) result {
	var (
		measuring, stop atomic.Bool
		wg              sync.WaitGroup
		t               tally
	)
	for w := 0; w < l.conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := &rawConn{addr: l.addr}
			lat := make([]uint32, 0, 4096)
			defer func() { c.close(); t.merge(lat) }()
			for i := 0; !stop.Load(); i++ {
				if c.conn == nil {
					if err := c.dial(); err != nil {
						if measuring.Load() {
							t.fail(err, transportKind(err))
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
				}
				req := l.request(w, i)
				start := time.Now()
				err := c.do(req, start.Add(l.requestTimeout()))
				d := time.Since(start)
				if measuring.Load() {
					t.outcome(err, &c.resp, l.want, d, &lat)
				}
			}
		}(w)
	}
	sleepCtx(ctx, l.warmup)
	if l.onStart != nil {
		l.onStart()
	}
	measuring.Store(true)
	start := time.Now()
	sleepCtx(ctx, l.duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	if l.onEnd != nil {
		l.onEnd()
	}
	stop.Store(true)
	wg.Wait()
	return t.result(elapsed, l.keep)
}

// runOpen is the open loop. The measured window's edges are fixed before
// the first request, and a request belongs to the window in which it was
// due, whenever it is sent or answered: every request due inside the
// window is counted, from when it was due, including those still waiting
// for a free connection or for their answer when the window closes (the
// run waits for them, at most their timeout past their due time), and
// none that was due before it, in the warm-up.
func (l load) runOpen(ctx context.Context) result {
	begin := time.Now()
	winStart := begin.Add(l.warmup)
	winEnd := winStart.Add(l.duration)
	// Every due time fits: the pacer never waits for the workers.
	due := make(chan time.Time, int(l.rate*(l.warmup+l.duration).Seconds())+1)
	go pace(ctx, l.rate, begin, winEnd, due)
	var (
		wg       sync.WaitGroup
		t        tally
		lastDone atomic.Int64 // the latest answer to a counted request, ns after winStart
	)
	for w := 0; w < l.conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := &rawConn{addr: l.addr}
			lat := make([]uint32, 0, 4096)
			defer func() { c.close(); t.merge(lat) }()
			i := 0
			for at := range due {
				if ctx.Err() != nil {
					continue // drain: a cancelled run sends nothing more
				}
				counted := !at.Before(winStart) && at.Before(winEnd)
				if time.Since(at) >= l.requestTimeout() {
					if counted {
						t.fail(errLate, "transport: timeout")
					}
					continue
				}
				var err error
				if c.conn == nil {
					err = c.dial()
				}
				if err == nil {
					err = c.do(l.request(w, i), at.Add(l.requestTimeout()))
					i++
				}
				now := time.Now()
				if !counted {
					continue
				}
				if t.outcome(err, &c.resp, l.want, now.Sub(at), &lat) {
					done := int64(now.Sub(winStart))
					for old := lastDone.Load(); done > old && !lastDone.CompareAndSwap(old, done); old = lastDone.Load() {
					}
				}
			}
		}(w)
	}
	sleepCtx(ctx, time.Until(winStart))
	if l.onStart != nil {
		l.onStart()
	}
	sleepCtx(ctx, time.Until(winEnd))
	if l.onEnd != nil {
		l.onEnd()
	}
	wg.Wait()
	return t.result(max(l.duration, time.Duration(lastDone.Load())), l.keep)
}

// pace sends on due the times at which requests are due, rate per second
// from begin, the last one before end, then closes due (at once when ctx
// ends). It sleeps until each time has come and, after oversleeping,
// sends every time that has come due, so that the schedule holds; each
// time is computed from begin, so that the rounding of the interval does
// not add up.
func pace(ctx context.Context, rate float64, begin, end time.Time, due chan<- time.Time) {
	defer close(due)
	for k := 0; ; k++ {
		next := begin.Add(time.Duration(float64(k) * float64(time.Second) / rate))
		if !next.Before(end) || ctx.Err() != nil {
			return
		}
		if d := time.Until(next); d > 0 {
			sleepCtx(ctx, d)
		}
		due <- next
	}
}

func percentiles(us []uint32) (p50, p99, maxd time.Duration) {
	if len(us) == 0 {
		return 0, 0, 0
	}
	slices.Sort(us)
	at := func(q float64) time.Duration {
		i := int(q * float64(len(us)-1))
		return time.Duration(us[i]) * time.Microsecond
	}
	return at(0.50), at(0.99), time.Duration(us[len(us)-1]) * time.Microsecond
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// rawGET renders a GET request with optional bearer token.
func rawGET(host, path, token string) []byte {
	b := make([]byte, 0, 128+len(token))
	b = append(b, "GET "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: tollgate-loadtest\r\n"...)
	if token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, token...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return b
}
