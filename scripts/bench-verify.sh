#!/usr/bin/env bash
# `labhours-verify` on an instrument-year bundle (issue 14 target: ≤ 5 s),
# release build, under /usr/bin/time -v.
#
# The bundle is written by the ignored test `write_year_bundle` in
# tests/evidence.rs through the real store: one signed agent, a heartbeat
# every BEAT_S seconds (default 60, the agent's default heartbeat), three
# hours of use a day, one booking a day, 365 days, envelopes of 500 events
# committed through `Store::commit`, a checkpoint, `evidence export`.
#
# Prints each run and the median: wall seconds, CPU seconds, max RSS.
#
# Usage: scripts/bench-verify.sh [-r RUNS] [--no-build] [--keep]
#   -r RUNS      runs (default 3; the median is reported)
#   --no-build   use the release binary as it is
#   --keep       keep the work directory (and the bundle)
#
# BEAT_S=30 scripts/bench-verify.sh doubles the events.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
bench_options 17 "$@"
ensure_debian_packages time

verify=$(release_binary labhours-verify labhours-collector)
bench_workdir bench-verify

bundle="$(pwd)/$work/bundle"
echo "writing an instrument-year bundle (heartbeat every ${BEAT_S:-60} s) ..."
BENCH_BUNDLE="$bundle" BENCH_BEAT_S="${BEAT_S:-60}" \
  cargo test -q -p labhours-tests --test evidence -- --ignored --exact write_year_bundle >/dev/null
echo "bundle: $(du -sh "$bundle" | cut -f1), $(wc -l <"$bundle/events.jsonl") events," \
  "$(wc -l <"$bundle/envelopes.jsonl") envelopes"

echo "load before: $(uptime)"
walls=() cpus=() rsss=()
for r in $(seq "$runs"); do
  /usr/bin/time -v "$verify" "$bundle" >"$work/out.txt" 2>"$work/time.txt" || {
    cat "$work/out.txt" "$work/time.txt" >&2
    exit 1
  }
  walls+=("$(time_wall_s "$work/time.txt")")
  cpus+=("$(time_cpu_s "$work/time.txt")")
  rsss+=("$(time_max_rss_kb "$work/time.txt")")
  printf '  run %d: %6.2f s wall  %6.2f s CPU  max RSS %7d KiB  | %s\n' \
    "$r" "${walls[-1]}" "${cpus[-1]}" "${rsss[-1]}" "$(tail -n 1 "$work/out.txt")"
done
printf 'median: %.2f s wall, %.2f s CPU, max RSS %d KiB (target: 5 s)\n' \
  "$(median "${walls[@]}")" "$(median "${cpus[@]}")" "$(median "${rsss[@]}")"
