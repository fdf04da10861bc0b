#!/usr/bin/env bash
# callgrind-warm.sh BENCH [N]: instructions per request of one benchmark of
# authproxy/internal/app (e.g. 'WarmRequest/core/access_log=false' or
# BareForward), counted by callgrind over exactly N requests after warm-up,
# every thread included (handler, loopback upstream, runtime, GC).
# Needs valgrind. Instruction counts depend far less than time on what else
# runs on the machine, but not nothing: under contention the Go scheduler
# spins and parks differently. With TOGGLE set to a function pattern (e.g.
# 'github.com/gofiber/fiber/v2.(*App).handler'), only instructions executed
# inside that function are counted: the handler's own work, without the
# runtime's background goroutines. VALGRIND_ARGS adds callgrind options, e.g.
# '--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,8,64' to count
# simulated cache misses (the load harness's callgrind row does the same).
set -euo pipefail
bench=$1
n=${2:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/app.test" "$root/authproxy/internal/app"
cd "$root/authproxy/internal/app"
# Go's asynchronous preemption signals upset callgrind's signal handling, and
# valgrind's CPUID reports RDTSCP, which it cannot execute (SIGILL in the
# runtime's cputicks).
GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off BENCH_SYNC="$tmp/sync" BENCH_SYNC_N=$n BENCH_SYNC_NAME="Benchmark${bench%\$}" \
	valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" ${TOGGLE:+--toggle-collect="$TOGGLE"} ${VALGRIND_ARGS:-} \
	"$tmp/app.test" -test.run='^$' -test.bench="^Benchmark${bench}\$" -test.benchtime=1x >"$tmp/log" 2>&1 &
pid=$!
until [ -e "$tmp/sync.ready" ]; do sleep 0.2; kill -0 $pid 2>/dev/null || { cat "$tmp/log" >&2; exit 1; }; done
callgrind_control -z $pid >/dev/null 2>&1
touch "$tmp/sync.go"
until [ -e "$tmp/sync.done" ]; do sleep 0.2; done
callgrind_control -d $pid >/dev/null 2>&1
touch "$tmp/sync.end"
wait $pid
total=$(grep -h '^summary:\|^totals:' "$tmp"/cg.out.* | awk 'NR==1{print $2}')
if [ -n "${KEEP:-}" ]; then cp "$tmp"/cg.out.* "$KEEP"/; fi
echo "$bench: $n requests, $total instructions, $((total / n)) per request"
