package scalesim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/natsinv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// msgIDHeader carries the outbox id, as coreapi's relay sends it.
const msgIDHeader = "Nats-Msg-Id"

// FanoutConfig is one fan-out row.
type FanoutConfig struct {
	Subscribers int           // simulated proxies
	Rate        int           // invalidations published per second
	Duration    time.Duration // publishing time
	CacheSize   int64         // projection cache entries per subscriber
}

// FanoutResult is what one row measured.
type FanoutResult struct {
	FanoutConfig
	Nodes         int
	Published     int
	Expected      int64         // Published × Subscribers
	Applied       int64         // evictions seen at the subscribers
	Dropped       int           // discarded by subscribers' clients as slow consumers
	SlowConsumers int64         // slow consumers counted by the servers
	Lag           Summary       // over every delivery expected: those never applied rank last (Unreached)
	Wall          time.Duration // from the first publish until every event was applied (or the wait gave up)
	NATSCPU       time.Duration // CPU used by the nats-server processes in Wall
	SimCPU        time.Duration // CPU used by this process (publisher + subscribers) in Wall
	SetupTime     time.Duration // connecting every subscriber and seeing interest everywhere
}

// probe is the target of one subscriber: the proxy's projection cache,
// with a note of when each measured eviction happened.
type probe struct {
	*projection.Cache
	run  *fanoutRun
	mu   sync.Mutex
	lags []time.Duration
	warm atomic.Int64 // last warm-up round seen
}

func (p *probe) InvalidateUser(id string) {
	p.Cache.InvalidateUser(id)
	now := time.Since(p.run.base)
	seq, ok := parseSeq(id)
	if ok && seq >= len(p.run.sent) {
		ok = false
	}
	if !ok {
		if r, ok := parseWarm(id); ok {
			p.warm.Store(int64(r))
		}
		return
	}
	lag := now - time.Duration(p.run.sent[seq].Load())
	p.mu.Lock()
	p.lags = append(p.lags, lag)
	p.mu.Unlock()
	p.run.applied.Add(1)
}

// Warm-up events use a different UUID prefix than measured ones.
const warmPrefix = "ffffffff-0000-4000-8000-"

func warmUserID(round int) string { return fmt.Sprintf("%s%012x", warmPrefix, round) }

func parseWarm(id string) (int, bool) {
	if len(id) != 36 || id[:len(warmPrefix)] != warmPrefix {
		return 0, false
	}
	n, err := strconv.ParseUint(id[len(warmPrefix):], 16, 48)
	return int(n), err == nil
}

type fanoutRun struct {
	base    time.Time
	sent    []atomic.Int64 // nanoseconds since base, per sequence number
	applied atomic.Int64
}

// Fanout runs one row against the cluster: it connects cfg.Subscribers
// subscribers (spread over the nodes) with natsinv, waits until every one
// receives a warm-up event, publishes cfg.Rate invalidations per second for
// cfg.Duration from a separate connection to the first node, and waits for
// every delivery (or 10 s without progress).
func Fanout(ctx context.Context, c *Cluster, cfg FanoutConfig, log *slog.Logger) (*FanoutResult, error) {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1000
	}
	total := int(float64(cfg.Rate)*cfg.Duration.Seconds() + 0.5)
	run := &fanoutRun{base: time.Now(), sent: make([]atomic.Int64, total)}
	res := &FanoutResult{FanoutConfig: cfg, Nodes: len(c.Nodes)}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	urls := c.URLs()

	setup := time.Now()
	probes := make([]*probe, 0, cfg.Subscribers)
	subs := make([]*natsinv.Subscriber, 0, cfg.Subscribers)
	defer func() {
		var wg sync.WaitGroup
		for _, s := range subs {
			wg.Add(1)
			go func() { defer wg.Done(); _ = s.Close(5 * time.Second) }()
		}
		wg.Wait()
		for _, p := range probes {
			p.Close()
		}
	}()
	for i := range cfg.Subscribers {
		m := metrics.New()
		pc, err := projection.New(projection.Options{Size: cfg.CacheSize, TTL: time.Minute, MaxStaleness: 30 * time.Second}, nil, m)
		if err != nil {
			return nil, err
		}
		p := &probe{Cache: pc, run: run}
		probes = append(probes, p)
		s, err := natsinv.Connect(natsinv.Options{URL: urls[i%len(urls)]}, p, quiet, m)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		subs = append(subs, s)
	}
	pub, err := nats.Connect(urls[0], nats.Name("scalesim-publisher"))
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	defer pub.Close()

	// Interest reaches every node (and route) asynchronously: repeat a
	// warm-up event until every subscriber has seen the latest one.
	for round := 1; ; round++ {
		if err := pub.Publish(invalidation.UserSubject(warmUserID(round)), nil); err != nil {
			return nil, fmt.Errorf("warm-up publish: %w", err)
		}
		_ = pub.Flush()
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) && !allWarm(probes, round) {
			time.Sleep(5 * time.Millisecond)
		}
		if allWarm(probes, round) {
			break
		}
		if time.Since(setup) > 60*time.Second || ctx.Err() != nil {
			return nil, fmt.Errorf("warm-up: not every subscriber receives events after %s", time.Since(setup).Round(time.Millisecond))
		}
	}
	res.SetupTime = time.Since(setup)
	log.Info("fan-out row", "nodes", len(c.Nodes), "subscribers", cfg.Subscribers, "rate", cfg.Rate, "setup", res.SetupTime.String())

	slowBefore, err := c.SlowConsumers()
	if err != nil {
		return nil, err
	}
	natsBefore, err := c.CPU()
	if err != nil {
		return nil, err
	}
	simBefore, err := ProcessCPU(os.Getpid())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	hdr := nats.Header{}
	for seq := 0; seq < total; {
		due := min(total, int(time.Since(start).Seconds()*float64(cfg.Rate))+1)
		for ; seq < due; seq++ {
			body, _ := json.Marshal(invalidation.Event{At: time.Now().UnixMilli(), Reason: "scalesim"})
			hdr.Set(msgIDHeader, strconv.Itoa(seq+1))
			msg := &nats.Msg{Subject: invalidation.UserSubject(seqUserID(seq)), Header: hdr, Data: body}
			run.sent[seq].Store(int64(time.Since(run.base)))
			if err := pub.PublishMsg(msg); err != nil {
				return nil, fmt.Errorf("publish: %w", err)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(time.Millisecond)
	}
	// Far past what the machine can deliver, the server takes long to
	// answer the flush's ping: wait for it rather than abort the row.
	if err := pub.FlushTimeout(2 * time.Minute); err != nil {
		return nil, fmt.Errorf("publisher flush: %w", err)
	}
	res.Published = total
	res.Expected = int64(total) * int64(cfg.Subscribers)

	// Wait for every delivery, giving up after 10 s without progress.
	last, lastChange := run.applied.Load(), time.Now()
	for {
		got := run.applied.Load() + int64(dropped(subs))
		if got >= res.Expected || time.Since(lastChange) > 10*time.Second || ctx.Err() != nil {
			break
		}
		if a := run.applied.Load(); a != last {
			last, lastChange = a, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.Wall = time.Since(start)
	natsAfter, err := c.CPU()
	if err != nil {
		return nil, err
	}
	simAfter, err := ProcessCPU(os.Getpid())
	if err != nil {
		return nil, err
	}
	slowAfter, err := c.SlowConsumers()
	if err != nil {
		return nil, err
	}
	res.NATSCPU, res.SimCPU = natsAfter-natsBefore, simAfter-simBefore
	res.SlowConsumers = slowAfter - slowBefore
	res.Applied = run.applied.Load()
	res.Dropped = dropped(subs)
	var all []time.Duration
	for _, p := range probes {
		p.mu.Lock()
		all = append(all, p.lags...)
		p.mu.Unlock()
	}
	// Deliveries never applied (dropped, or still missing when the wait
	// gave up) are the latest of all: the percentiles rank them last.
	res.Lag = SummarizeMissing(all, int(res.Expected-res.Applied))
	return res, nil
}

func allWarm(ps []*probe, round int) bool {
	for _, p := range ps {
		if p.warm.Load() < int64(round) {
			return false
		}
	}
	return true
}

func dropped(subs []*natsinv.Subscriber) int {
	n := 0
	for _, s := range subs {
		n += s.Dropped()
	}
	return n
}
