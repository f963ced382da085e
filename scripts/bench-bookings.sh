#!/usr/bin/env bash
# Bookings import throughput: `labhours-collector bookings import` (release
# build, the whole command) on generated files, under /usr/bin/time -v.
#
# For each file: a dry run (validated, nothing written) on a fresh
# database, an import (applied) on a fresh database, and a re-import of
# the unchanged file into that database. Files (scripts/gen-bookings.py):
# CSV of 10,000 and 100,000 rows (linear: the 100,000-row rate must match
# the 10,000-row one) and an iCalendar feed of 10,420 weekly events
# (3.8 MB, 103,679 occurrences). 39 of the 40 instruments are configured;
# the 40th exercises the not-monitored path (its bookings are kept).
#
# Prints each run and the median per case: wall seconds, rows/s (CSV rows
# or iCalendar occurrences), max RSS.
#
# Usage: scripts/bench-bookings.sh [-r RUNS] [--no-build] [--keep]
#   -r RUNS      runs per case (default 3; the median is reported)
#   --no-build   use the release binary as it is
#   --keep       keep the work directory
#
# Work files go under target/bench-bookings/ (the worktree's disk).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
bench_options 21 "$@"
ensure_debian_packages time

collector=$(release_binary labhours-collector labhours-collector)
bench_workdir bench-bookings

python3 scripts/gen-bookings.py csv 10000 "$work/b10k.csv"
python3 scripts/gen-bookings.py csv 100000 "$work/b100k.csv"
python3 scripts/gen-bookings.py ics 10420 "$work/feed.ics"
# What each file holds, as rows/s counts it.
declare -A rows=([b10k.csv]=10000 [b100k.csv]=100000 [feed.ics]=103679)

# A config on a data dir of its own.
write_config() {
  {
    echo "data_dir = \"$2\""
    printf '[site]\ntime_zone = "Asia/Shanghai"\n[log]\nlevel = "warn"\n'
    for i in $(seq 0 38); do
      printf '[[instruments]]\nid = "nmr-%02d"\nname = "NMR %d"\n' "$i" "$i"
    done
  } >"$1"
}

# run NAME FILE CONFIG [ARGS...]: one timed import; sets $wall_s and $rss_kb.
run() {
  local name=$1 file=$2 config=$3
  shift 3
  /usr/bin/time -v "$collector" bookings import --config "$config" "$file" "$@" \
    >"$work/out.txt" 2>"$work/time.txt" || {
    cat "$work/out.txt" "$work/time.txt" >&2
    exit 1
  }
  local elapsed
  elapsed=$(grep -F 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
  wall_s=$(awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' <<<"$elapsed")
  rss_kb=$(grep -F 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
  printf '  %-10s %-9s %6.2f s  %8.0f rows/s  max RSS %6d KiB  | %s\n' \
    "$name" "$(basename "$file")" "$wall_s" \
    "$(awk -v n="${rows[$(basename "$file")]}" -v s="$wall_s" 'BEGIN { print n / s }')" \
    "$rss_kb" "$(tail -n 1 "$work/out.txt")"
}


echo "load before: $(uptime)"
summary=()
for file in b10k.csv b100k.csv feed.ics; do
  dry=() applied=() again=() rss=()
  for r in $(seq "$runs"); do
    config="$work/c-$r.toml"
    write_config "$config" "$(pwd)/$work/data-$r"
    run "dry run" "$work/$file" "$config" --dry-run
    dry+=("$wall_s")
    rm -rf "$work/data-$r"
    run "import" "$work/$file" "$config"
    applied+=("$wall_s")
    rss+=("$rss_kb")
    run "re-import" "$work/$file" "$config"
    again+=("$wall_s")
    rm -rf "$work/data-$r"
  done
  n=${rows[$file]}
  for case in dry applied again; do
    declare -n times=$case
    m=$(median "${times[@]}")
    summary+=("$(printf '%-9s %-8s median %6.2f s = %8.0f rows/s (runs %s s)' \
      "$file" "$case" "$m" "$(awk -v n="$n" -v s="$m" 'BEGIN { print n / s }')" "${times[*]}")")
  done
  summary+=("$(printf '%-9s max RSS (import) median %s KiB' "$file" "$(median "${rss[@]}")")")
done
echo "load after: $(uptime)"
printf '%s\n' "${summary[@]}"
