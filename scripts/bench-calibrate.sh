#!/usr/bin/env bash
# Calibration speed: `labhours-agent calibrate --samples` on a week of 1 Hz
# samples (604,800 rows) and on four weeks, to show it is linear.
#
# Generates the CSVs with scripts/gen-samples.py (30-minute blocks of
# standby / running / running / off, 0.2 % failed reads, status lines that
# calibrate ignores), builds the agent in release once (a no-op when it is
# up to date), then runs calibrate RUNS times per file under
# /usr/bin/time -v. Prints each run and the median wall time, rows/s and
# maximum RSS per file.
#
# Usage: scripts/bench-calibrate.sh [-r RUNS] [--no-build] [--keep]
#   -r RUNS      runs per file (default 3; the median is reported)
#   --no-build   use $CARGO_TARGET_DIR/release/labhours-agent (default target/) as it is
#   --keep       keep the work directory
#
# Work files go under target/bench-calibrate/ (the worktree's disk).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
build=1
keep=
while (($#)); do
  case $1 in
    -r) runs=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --keep) keep=1; shift ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages time

if [ -n "$build" ]; then
  cargo build --release -p labhours-agent
fi
agent=${CARGO_TARGET_DIR:-target}/release/labhours-agent
[ -x "$agent" ] || { echo "no $agent: build it or drop --no-build" >&2; exit 1; }

mkdir -p target/bench-calibrate
work=$(mktemp -d target/bench-calibrate/run.XXXXXX)
cleanup() { if [ -z "$keep" ]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT

cat >"$work/agent.toml" <<TOML
agent_id = "bench"
instrument_id = "bench-instrument"
data_dir = "$(pwd)/$work/data"
[state]
on_above_w = 10.0
running_above_w = 1000.0
TOML

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "load before: $(uptime)"
for rows in 604800 2419200; do
  csv="$work/samples-$rows.csv"
  python3 scripts/gen-samples.py "$rows" "$csv"
  wall=()
  rss=()
  for run in $(seq "$runs"); do
    /usr/bin/time -v "$agent" calibrate --config "$work/agent.toml" --samples "$csv" \
      >"$work/out.txt" 2>"$work/time.txt" || { cat "$work/out.txt" "$work/time.txt" >&2; exit 1; }
    elapsed=$(grep -F 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
    wall_s=$(awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' <<<"$elapsed")
    rss_kb=$(grep -F 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
    wall+=("$wall_s")
    rss+=("$rss_kb")
    printf '%d rows, run %d: wall %s s, max RSS %s KiB, %s\n' "$rows" "$run" "$wall_s" "$rss_kb" \
      "$(grep -E '^(on_above_w|running_above_w|running_exit_below_w) =' -h "$work/out.txt" | tr -s ' ' | paste -sd' ')"
  done
  m=$(median "${wall[@]}")
  echo "calibrate: $rows rows, median of $runs: $m s = $(awk -v n="$rows" -v s="$m" 'BEGIN { printf "%.0f", n / s }') rows/s, max RSS $(median "${rss[@]}") KiB"
done
echo "load after: $(uptime)"
