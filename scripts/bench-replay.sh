#!/usr/bin/env bash
# Replay throughput: samples per second through the CSV reader, the state
# engine and the durable outbox, as `labhours-agent replay` does it.
#
# Generates N samples (1 Hz, standby/running/off blocks, 0.2 % failed reads,
# a status line about every 10 minutes) with scripts/gen-samples.py, builds
# the agent in release once (a no-op when it is up to date), then replays
# the file RUNS times, each into a fresh data_dir, under /usr/bin/time -v.
# Prints each run and the median: samples/s from the agent's own timing and
# from the wall time of the whole command, and the maximum RSS.
#
# Usage: scripts/bench-replay.sh [-n SAMPLES] [-r RUNS] [--no-build] [--keep]
#   -n SAMPLES   rows to generate (default 2000000)
#   -r RUNS      replays (default 3; the median is reported)
#   --no-build   use target/release/labhours-agent as it is
#   --keep       keep the work directory (CSV, config, outbox) for a look
#
# Work files go under target/bench-replay/ (the worktree's disk, not a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."

samples=2000000
runs=3
build=1
keep=
while (($#)); do
  case $1 in
    -n) samples=$2; shift 2 ;;
    -r) runs=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --keep) keep=1; shift ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages time

if [ -n "$build" ]; then
  cargo build --release -p labhours-agent
fi
agent=target/release/labhours-agent
[ -x "$agent" ] || { echo "no $agent: build it or drop --no-build" >&2; exit 1; }

mkdir -p target/bench-replay
work=$(mktemp -d target/bench-replay/run.XXXXXX)
cleanup() { if [ -z "$keep" ]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT

csv="$work/samples.csv"
python3 scripts/gen-samples.py "$samples" "$csv"

write_config() {
  cat >"$1" <<TOML
agent_id = "bench"
instrument_id = "bench-instrument"
data_dir = "$2"
poll_interval_ms = 1000

[state]
on_above_w = 10.0
running_above_w = 1000.0

[status]
serial = { serial_port = "/dev/null" }
[[status.rules]]
pattern = "ACQUISITION (STARTED|RUNNING)(?: sample=(?P<sample>\\\\S+))?"
state = "running"
[[status.rules]]
pattern = "ERROR|FAULT"
state = "fault"
[[status.rules]]
pattern = "IDLE|READY"
state = "standby"

[log]
level = "warn"
TOML
}

echo "load before: $(uptime)"
own=()
wall=()
rss=()
for run in $(seq "$runs"); do
  data="$work/data-$run"
  config="$work/agent-$run.toml"
  write_config "$config" "$(pwd)/$data"
  /usr/bin/time -v "$agent" replay --config "$config" --samples "$csv" --no-wait \
    >"$work/out-$run.txt" 2>"$work/time-$run.txt" || {
    cat "$work/out-$run.txt" "$work/time-$run.txt" >&2
    exit 1
  }
  # "...: N samples (M status lines matched) → E events in the outbox in S s"
  line=$(cat "$work/out-$run.txt")
  secs=$(sed -E 's/.* in ([0-9.]+) s$/\1/' <<<"$line")
  elapsed=$(grep -F 'Elapsed (wall clock)' "$work/time-$run.txt" | awk '{print $NF}')
  wall_s=$(awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' <<<"$elapsed")
  rss_kb=$(grep -F 'Maximum resident set size' "$work/time-$run.txt" | awk '{print $NF}')
  own+=("$(awk -v n="$samples" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')")
  wall+=("$(awk -v n="$samples" -v s="$wall_s" 'BEGIN { printf "%.0f", n / s }')")
  rss+=("$rss_kb")
  printf 'run %d: %s\n       agent timing %s s = %s samples/s; wall %s s = %s samples/s; max RSS %s KiB; outbox %s\n' \
    "$run" "$line" "$secs" "${own[-1]}" "$wall_s" "${wall[-1]}" "$rss_kb" "$(du -sh "$data" | cut -f1)"
  rm -rf "$data"
done
echo "load after: $(uptime)"

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "replay: $samples samples, median of $runs: $(median "${own[@]}") samples/s (agent timing), $(median "${wall[@]}") samples/s (wall, whole command), max RSS $(median "${rss[@]}") KiB"
