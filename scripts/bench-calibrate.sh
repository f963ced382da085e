#!/usr/bin/env bash
# Calibration speed: `labhours-agent calibrate --samples` on a week of 1 Hz
# samples (604,800 rows) and on four weeks, to show it is linear.
#
# Generates the CSVs with scripts/gen-samples.py (30-minute blocks of
# standby / running / running / off, 0.2 % failed reads, status lines that
# calibrate ignores), builds the agent in release once (a no-op when it is
# up to date), then runs calibrate RUNS times per file under
# /usr/bin/time -v. Prints each run and the median wall time, rows/s, CPU
# time and maximum RSS per file.
#
# Usage: scripts/bench-calibrate.sh [-r RUNS] [--no-build] [--keep]
#   -r RUNS      runs per file (default 3; the median is reported)
#   --no-build   use $CARGO_TARGET_DIR/release/labhours-agent (default target/) as it is
#   --keep       keep the work directory
#
# Work files go under target/bench-calibrate/ (the worktree's disk).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
bench_options 17 "$@"
ensure_debian_packages time
agent=$(release_binary labhours-agent labhours-agent)
bench_workdir bench-calibrate

cat >"$work/agent.toml" <<TOML
agent_id = "bench"
instrument_id = "bench-instrument"
data_dir = "$(pwd)/$work/data"
[state]
on_above_w = 10.0
running_above_w = 1000.0
TOML

echo "load before: $(uptime)"
for rows in 604800 2419200; do
  csv="$work/samples-$rows.csv"
  python3 scripts/gen-samples.py "$rows" "$csv"
  wall=()
  cpu=()
  rss=()
  for run in $(seq "$runs"); do
    /usr/bin/time -v "$agent" calibrate --config "$work/agent.toml" --samples "$csv" \
      >"$work/out.txt" 2>"$work/time.txt" || { cat "$work/out.txt" "$work/time.txt" >&2; exit 1; }
    wall_s=$(time_wall_s "$work/time.txt")
    rss_kb=$(time_max_rss_kb "$work/time.txt")
    cpu_s=$(time_cpu_s "$work/time.txt")
    wall+=("$wall_s")
    cpu+=("$cpu_s")
    rss+=("$rss_kb")
    printf '%d rows, run %d: wall %s s, CPU %s s, max RSS %s KiB, %s\n' "$rows" "$run" "$wall_s" "$cpu_s" "$rss_kb" \
      "$(grep -E '^(on_above_w|running_above_w|running_exit_below_w) =' -h "$work/out.txt" | tr -s ' ' | paste -sd' ')"
  done
  m=$(median "${wall[@]}")
  echo "calibrate: $rows rows, median of $runs: $m s = $(awk -v n="$rows" -v s="$m" 'BEGIN { printf "%.0f", n / s }') rows/s (wall), CPU $(median "${cpu[@]}") s, max RSS $(median "${rss[@]}") KiB"
done
echo "load after: $(uptime)"
