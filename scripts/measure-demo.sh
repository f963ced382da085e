#!/usr/bin/env bash
# `labhours-collector demo`: time from start to a reconciled history, and
# the steady CPU and memory of the whole demo (collector, embedded broker,
# six agents, six simulated meters, the status pty, the result-file writer:
# all one process).
#
# Per run, in a fresh data folder under target/measure-demo/:
#   1. starts the release binary with --history-days DAYS on free ports and
#      times it until it prints "Ready:" (history delivered and reconciled);
#   2. lets it settle for the warm-up, then takes CPU from utime+stime in
#      /proc/<pid>/stat over the measured window and samples VmRSS every second;
#   3. stops it with SIGINT (as Ctrl-C) and times the clean stop;
#   4. starts it again on the same folder and times it to "Ready:" (no
#      second backfill), then stops it again.
# Prints one line per run, and the median of the runs when there are several.
#
# Usage: scripts/measure-demo.sh [-d SECONDS] [-w SECONDS] [-r RUNS] [--days N] [--no-build] [--bin PATH] [--keep]
#   -d SECONDS   measured window for CPU (default 60)
#   -w SECONDS   warm-up after "Ready:" before measuring (default 10)
#   -r RUNS      runs (default 1)
#   --days N     days of history (default 30)
#   --no-build   use the release binary as it is
#   --bin PATH   measure this labhours-collector binary (implies --no-build)
#   --keep       keep the work directories
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60
warmup=10
runs=1
days=30
build=1
given=
keep=
while (($#)); do
  case $1 in
    -d) duration=$2; shift 2 ;;
    -w) warmup=$2; shift 2 ;;
    -r) runs=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --bin) given=$2; build=; shift 2 ;;
    --keep) keep=1; shift ;;
    *) sed -n '2,25p' "$0" >&2; exit 2 ;;
  esac
done

target=${CARGO_TARGET_DIR:-target}
if [ -n "$build" ]; then
  cargo build --release -p labhours-collector
fi
source=${given:-$target/release/labhours-collector}
[ -x "$source" ] || { echo "no $source: build it or drop --no-build" >&2; exit 1; }
# A copy: with a target dir shared between worktrees, another build may
# replace the binary while this runs.
mkdir -p target/measure-demo
bin=target/measure-demo/labhours-collector
[ "$source" -ef "$bin" ] || cp "$source" "$bin"
"$bin" demo --help >/dev/null 2>&1 || { echo "$source has no demo command: rebuild it" >&2; exit 1; }
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)

now() { date +%s.%N; }

# wait_ready LOG DEADLINE_S: waits for the "Ready:" line; fails after the deadline.
wait_ready() {
  local log=$1 limit=$2 start
  start=$(now)
  until grep -q '^Ready:' "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "the demo exited:" >&2; cat "$log" >&2; return 1; fi
    if (($(echo "$(now) - $start > $limit" | bc))); then echo "no Ready: within ${limit} s" >&2; return 1; fi
    sleep 0.1
  done
}

# cpu_ticks PID: utime + stime.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# stop_demo LOG: SIGINT, wait (bounded), check the clean stop; sets `stopped` (seconds).
stop_demo() {
  local log=$1 start rc=0 waited=0
  start=$(now)
  kill -INT "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
    waited=$((waited + 1))
    if [ "$waited" -gt 300 ]; then echo "did not stop within 30 s" >&2; kill -9 "$pid"; return 1; fi
  done
  wait "$pid" || rc=$?
  pid=
  [ "$rc" -eq 0 ] || { echo "exit status $rc" >&2; cat "$log" >&2; return 1; }
  grep -q '^Stopped' "$log" || { echo "no 'Stopped' line" >&2; return 1; }
  stopped=$(echo "$(now) - $start" | bc)
}

results=()
for run in $(seq 1 "$runs"); do
  work=$(mktemp -d "$(pwd)/target/measure-demo/run.XXXXXX")
  log=$work/first.log
  start=$(now)
  "$bin" demo --data-dir "$work/data" --history-days "$days" --http-port 0 --mqtt-port 0 --lang en \
    >"$log" 2>"$work/first.err" &
  pid=$!
  wait_ready "$log" 300
  ready=$(echo "$(now) - $start" | bc)
  sleep "$warmup"
  t0=$(cpu_ticks "$pid")
  rss_max=0
  rss_sum=0
  for _ in $(seq 1 "$duration"); do
    sleep 1
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    rss_sum=$((rss_sum + rss))
    [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  done
  t1=$(cpu_ticks "$pid")
  cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $duration" | bc)
  stop_demo "$log"
  stop1=$stopped

  log2=$work/second.log
  start=$(now)
  "$bin" demo --data-dir "$work/data" --http-port 0 --mqtt-port 0 --lang en >"$log2" 2>"$work/second.err" &
  pid=$!
  wait_ready "$log2" 120
  again=$(echo "$(now) - $start" | bc)
  stop_demo "$log2"
  stop2=$stopped

  own=$(sed -n 's/^Ready: .*, \([0-9.]*\) s after start.*/\1/p' "$log")
  history=$(grep '^History:' "$log" || true)
  printf 'run %d: ready %.1f s (the demo says %s s); CPU %s %% of one core over %d s; RSS max %d KiB, mean %d KiB; stop %.1f s; second start ready %.1f s, stop %.1f s; load %s\n  %s\n' \
    "$run" "$ready" "$own" "$cpu" "$duration" "$rss_max" $((rss_sum / duration)) "$stop1" "$again" "$stop2" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$history"
  results+=("$ready $cpu")
  [ -n "$keep" ] || rm -rf "$work"
done

if [ "$runs" -gt 1 ]; then
  mid=$(( (runs + 1) / 2 ))
  r=$(printf '%s\n' "${results[@]}" | awk '{print $1}' | sort -n | sed -n "${mid}p")
  c=$(printf '%s\n' "${results[@]}" | awk '{print $2}' | sort -n | sed -n "${mid}p")
  echo "median of $runs runs: ready $r s; CPU $c % of one core"
fi
