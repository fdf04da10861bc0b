package main

import (
	"strings"
	"testing"
	"time"
)

// A figure whose runs failed requests meets no target, however good the
// served requests' figure: the failures are left out of throughput, CPU
// per request and latency.
func TestVerdictsRefuseFailedRequests(t *testing.T) {
	r := &report{opts: options{conns: 64, users: 1000, manyUsers: 100000, duration: 10 * time.Second, warmup: 2 * time.Second}}
	r.add(row{name: "bare Fiber proxy", conns: 64, res: result{Requests: 300000, RPS: 30000, P99: 2 * time.Millisecond}})
	r.add(row{name: "authproxy warm (1000 users)", conns: 64, res: result{Requests: 290000, Errors: 12, RPS: 29000, P99: 2100 * time.Microsecond}})
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, res: result{Requests: 20000, RPS: 2000}})
	ok := result{Requests: 1, RPS: 20000, P99: time.Millisecond}
	r.paired = []pairedRound{{bare: ok, warm: result{Requests: 1, Errors: 3, RPS: 19000, P99: time.Millisecond}, bareCPU: 20, warmCPU: 22}}
	r.openLoop = [][]openLoopRow{
		{{name: "bare Fiber proxy", rate: 5000, requests: 1000, success: 1, p99: time.Millisecond},
			{name: "authproxy warm (1000 users)", rate: 5000, requests: 1000, success: 1, p99: 1100 * time.Microsecond}},
		// Its failures are the worst latencies of all: the round is out of
		// the median, and no verdict is met.
		{{name: "bare Fiber proxy", rate: 5000, requests: 1000, success: 1, p99: time.Millisecond},
			{name: "authproxy warm (1000 users)", rate: 5000, requests: 990, failed: 10, success: 0.99, p99: 1100 * time.Microsecond, note: "first error: timeout"}},
	}
	md := r.markdown()
	reportHas(t, md,
		"| authproxy warm ÷ bare proxy throughput, main rows above | 0.967 | ≥ 0.85: **not met**: 12 requests failed |",
		"| p99 added by authproxy (warm p99 − bare p99), main rows above | 0.10 ms | ≤ 0.3 ms: **not met**: 12 requests failed |",
		"| 14.5× | ≥ 10×: **not met**: 12 requests failed |",
		"| authproxy warm ÷ bare proxy throughput, median of 1 paired rounds | 0.950 | ≥ 0.85: **not met**: 3 requests failed |",
		"| 2.0 (22.0 − 20.0) | ≤ 5: **not met**: 3 requests failed |",
		"median of 1 rounds (where each ran and the CPU each used: below) | 0.10 ms | ≤ 0.3 ms: **not met**: 10 requests failed; round 2 left out, authproxy warm (1000 users) row: first error: timeout |",
		"- round 1, authproxy warm: 3 requests failed (left out of its figures)",
	)
	if strings.Contains(md, ": met") {
		t.Errorf("a target met by runs with failed requests:\n%s", md)
	}
	// No round complete: said, not left out.
	r.openLoop = r.openLoop[1:]
	reportHas(t, r.markdown(), "| p99 added by authproxy, open loop (the bare proxy at half a CPU) | no round with both rows measured and served (below) | ≤ 0.3 ms: **not met**: 10 requests failed |")
}

// The many-users goal needs both working sets warm in every round: a
// verification in the few users' run (the ratio's divisor) or a round
// whose counters were not read leaves it unmet, and no round with a ratio
// reads NaN, not a panic or a made-up figure.
func TestUsersVerdict(t *testing.T) {
	r := &report{opts: options{conns: 64, users: 1000, manyUsers: 100000}}
	round := func(few, many, fewVerif, verif float64) usersRound {
		return usersRound{few: result{Requests: 1, RPS: few}, many: result{Requests: 1, RPS: many}, fewCPU: 40, manyCPU: 45, fewVerif: fewVerif, verif: verif}
	}
	r.users = []usersRound{round(10000, 9000, 0, 0), round(10000, 9500, 0, 0), round(10000, 8500, 0, 0)}
	reportHas(t, r.markdown(), "| 0.90; 0 | ≥ 0.8 and 0: met |", "| 1 | 10000 | 40.0 µs | 9000 | 45.0 µs | 0.90 | 0; 0 | 0 |")

	r.users[1].fewVerif = 0.02
	reportHas(t, r.markdown(), "| 0.90; 0.02 | ≥ 0.8 and 0: **missed** |", "| 0.95 | 0.02; 0 | 0 |")

	r.users[1].fewVerif = -1
	reportHas(t, r.markdown(), "| 0.90; 0 | ≥ 0.8 and 0: **missed** (a round's verifications were not read) |", "| not read; 0 |")

	r.users = []usersRound{{few: result{}, many: result{Requests: 1, RPS: 9000}, fewVerif: 0, verif: 0}}
	md := r.markdown() // must not panic
	reportHas(t, md, "median of 0 alternating rounds on one proxy; verifications / request (most of any run, either working set) | NaN; 0 | ≥ 0.8 and 0: **missed** |")
}

// A paired round whose authproxy run verified tokens or fetched
// projections in its window measured no warm request: it is left out of
// the medians, and the verdicts name it.
func TestPairedRoundNotWarm(t *testing.T) {
	round := func(warmRPS, warmCPU, misses float64) pairedRound {
		return pairedRound{bare: result{Requests: 1, RPS: 100, P99: time.Millisecond}, warm: result{Requests: 1, RPS: warmRPS, P99: time.Millisecond},
			bareCPU: 20, warmCPU: warmCPU, warmMisses: misses,
			bareRest: runCPU{sys: 5, gen: 10, up: 10}, warmRest: runCPU{sys: 6, gen: 10, up: 11}}
	}
	r := &report{opts: options{conns: 64, duration: 10 * time.Second}, paired: []pairedRound{
		round(90, 24, 0), round(60, 60, 1000), round(88, 25, 0), round(92, 23, -1),
	}}
	ratio, _, nr := r.pairedMedians()
	_, _, added, n := r.pairedCPU()
	if ratio != 0.90 || nr != 3 || n != 3 || added != 4 {
		t.Fatalf("ratio %v, CPU difference %v over %d rounds; want 0.90 and 4 over the 3 warm (or unread) rounds", ratio, added, n)
	}
	if m := r.runMedians(); m.nSys != 3 || m.nBound != 3 {
		t.Fatalf("runMedians over %d and %d rounds, want 3", m.nSys, m.nBound)
	}
	reportHas(t, r.markdown(),
		"| authproxy warm ÷ bare proxy throughput, median of 3 paired rounds | 0.900 | ≥ 0.85: met; round 2 left out: authproxy not warm (1000 token verifications and projection fetches in its window) |",
		"| 4.0 (24.0 − 20.0) | ≤ 5: met; round 2 left out: authproxy not warm",
	)
}

// The invalidation trials that did not turn count as trials, ranked above
// every latency measured: the count and the percentiles are over all of
// them.
func TestInvalidationTrialsCountTimeouts(t *testing.T) {
	l := &latencies{timeouts: 5}
	for i := 1; i <= 195; i++ {
		l.values = append(l.values, time.Duration(i)*100*time.Microsecond)
	}
	r := &report{invalidation: l}
	md := r.markdown()
	reportHas(t, md, "first 403 at the proxy, 200 trials (5 did not turn within 5 s, ranked above every latency measured)",
		"| 10.00 ms | did not turn within 5 s | did not turn within 5 s | **missed** |")
	l.timeouts = 0
	reportHas(t, r.markdown(), "195 trials (0 did not turn", "| 9.80 ms | 19.30 ms | 19.50 ms | met |")
}

// The ratio to oauth2-proxy is judged on the median of the alternating
// rounds, not on the two main rows run minutes apart; a round's failed
// requests fail it, and rounds where neither answered read as such.
func TestPeerVerdict(t *testing.T) {
	r := &report{opts: options{conns: 64, users: 1000, manyUsers: 100000, duration: 10 * time.Second, warmup: 2 * time.Second}}
	r.add(row{name: "bare Fiber proxy", conns: 64, res: result{Requests: 300000, RPS: 30000}})
	r.add(row{name: "authproxy warm (1000 users)", conns: 64, res: result{Requests: 180000, RPS: 18000}, cpu: 40})
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, res: result{Requests: 24000, RPS: 2400}, cpu: 500})
	round := func(peer, warm float64, misses float64) peerRound {
		return peerRound{peer: result{Requests: 1, RPS: peer}, warm: result{Requests: 1, RPS: warm}, peerCPU: 400, warmCPU: 40, warmMisses: misses}
	}
	// Main rows: 7.5×; rounds: 11×, 9×, 12× (median 11×).
	r.peer = []peerRound{round(2000, 22000, 0), round(2000, 18000, 0), round(2000, 24000, 0)}
	reportHas(t, r.markdown(),
		"median of 3 alternating rounds (rounds from 9.0× to 12.0×; authproxy's token verifications and projection fetches in its runs, the most of any: 0) | 11.0× | ≥ 10×: met |",
		"| oauth2-proxy ÷ authproxy warm, CPU per request of each proxy process, median of the same rounds' ratios | 10.0× (400 µs ÷ 40.0 µs, medians) |",
		"| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, main rows above | 7.5× | (one run of each, minutes apart; the alternating rounds above are the target's figure) |",
	)
	// A round with a verification counts (it can only lower authproxy's
	// figure) and says so; one whose counters were not read says that.
	r.peer[1].warmMisses = 3
	reportHas(t, r.markdown(), "the most of any: 3) | 11.0× | ≥ 10×: met |")
	r.peer[1].warmMisses = -1
	reportHas(t, r.markdown(), "the most of any: not read) | 11.0× | ≥ 10×: met |")
	// Failed requests in any round fail the target.
	r.peer[2].warm.Errors = 5
	reportHas(t, r.markdown(), "| 11.0× | ≥ 10×: **not met**: 5 requests failed |")
	// A median under 10× misses it.
	r.peer = []peerRound{round(2000, 18000, 0), round(2000, 19000, 0)}
	reportHas(t, r.markdown(), "| 9.2× | ≥ 10×: **missed** |")
	// No round answered: no figure made up.
	r.peer = []peerRound{{peer: result{Requests: 0}, warm: result{Requests: 1, RPS: 18000}}}
	md := r.markdown()
	reportHas(t, md, "| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, alternating rounds | no round with both runs answered (1 rounds) | ≥ 10×: **not met** |")
	if strings.Contains(md, "10×: met") {
		t.Errorf("a target met without a round:\n%s", md)
	}
	// Without rounds (an older run), the main rows keep the verdict.
	r.peer = nil
	reportHas(t, r.markdown(), "| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, main rows above | 7.5× | ≥ 10×: **missed** |")
}
