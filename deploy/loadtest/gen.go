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
}

// result is what one run measured, during the measured window only.
type result struct {
	Requests int64
	Errors   int64
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

func (l load) run(ctx context.Context) result {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		all       []uint32 // latencies in microseconds
		reqs      atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		kinds     errKinds
	)
	noteErr := func(err error, kind string) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
		kinds.add(kind)
	}
	var due chan time.Time // open loop: when each request is due
	done := make(chan struct{})
	if l.rate > 0 {
		due = make(chan time.Time, 1<<20)
		go pace(l.rate, due, done)
	}
	for w := 0; w < l.conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			lat := make([]uint32, 0, 4096)
			var (
				conn net.Conn
				br   *bufio.Reader
				resp fasthttp.Response
			)
			resp.SkipBody = false
			dial := func() error {
				if conn != nil {
					conn.Close()
				}
				c, err := net.DialTimeout("tcp", l.addr, 5*time.Second)
				if err != nil {
					conn = nil
					return err
				}
				conn = c
				br = bufio.NewReaderSize(c, 16<<10)
				return nil
			}
			defer func() {
				if conn != nil {
					conn.Close()
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			}()
			for i := 0; !stop.Load(); i++ {
				if conn == nil {
					if err := dial(); err != nil {
						if measuring.Load() {
							noteErr(err, transportKind(err))
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
				}
				req := l.request(w, i)
				start := time.Now()
				if due != nil {
					select {
					case start = <-due:
					case <-done:
						continue
					}
				}
				_ = conn.SetDeadline(start.Add(10 * time.Second))
				_, err := conn.Write(req)
				if err == nil {
					resp.Reset()
					err = resp.Read(br)
				}
				d := time.Since(start)
				if !measuring.Load() {
					if err != nil {
						conn.Close()
						conn = nil
					}
					continue
				}
				reqs.Add(1)
				switch {
				case err != nil:
					noteErr(err, transportKind(err))
					conn.Close()
					conn = nil
				case resp.StatusCode() != l.want:
					noteErr(errors.New("status "+fasthttp.StatusMessage(resp.StatusCode())+": "+string(truncate(resp.Body(), 200))), responseKind(&resp))
				}
				if resp.ConnectionClose() && conn != nil {
					conn.Close()
					conn = nil
				}
				lat = append(lat, uint32(min(d.Microseconds(), 1<<31)))
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
	close(done)
	wg.Wait()

	r := result{Requests: reqs.Load(), Errors: errs.Load(), Elapsed: elapsed, Kinds: kinds.counts()}
	if v := firstErr.Load(); v != nil {
		r.FirstErr = v.(string)
	}
	r.RPS = float64(r.Requests) / elapsed.Seconds()
	r.P50, r.P99, r.Max = percentiles(all)
	if l.keep {
		r.Latencies = all
	}
	return r
}

// pace sends on due the times at which requests are due, rate per second,
// until done is closed. It sleeps between them and, after oversleeping,
// sends every time that has come due, so that the schedule holds on
// average.
func pace(rate float64, due chan<- time.Time, done <-chan struct{}) {
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for {
		now := time.Now()
		for !next.After(now) {
			select {
			case due <- next:
			case <-done:
				return
			}
			next = next.Add(interval)
		}
		select {
		case <-done:
			return
		default:
		}
		time.Sleep(next.Sub(now))
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
