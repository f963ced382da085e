#!/usr/bin/env bash
# Hub targets (issue 15, docs/design/federation.md):
#   1. a year of S sites × N instruments of daily verified rows (and their
#      months) pushed into a hub through POST /api/v1/federation/batch, one
#      batch per site (collector/examples/hub_bench.rs): wall time;
#   2. GET /api/v1/hours over all of it (the year, one row per instrument;
#      and one row per site with group_by=unit): p50 and p95 of R requests
#      (curl's time_total).
#
# Release build; a fresh hub under target/bench-hub/ on SQLite.
#
# Usage: scripts/bench-hub.sh [-s SITES] [-n INSTRUMENTS] [-d DAYS] [-w WORKERS] [-r REQUESTS] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

sites=200
instruments=50
days=365
workers=2
requests=30
build=1
while (($#)); do
  case $1 in
    -s) sites=$2; shift 2 ;;
    -n) instruments=$2; shift 2 ;;
    -d) days=$2; shift 2 ;;
    -w) workers=$2; shift 2 ;;
    -r) requests=$2; shift 2 ;;
    --no-build) build=; shift ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages time curl

target=${CARGO_TARGET_DIR:-target}
if [ -n "$build" ]; then
  cargo build --release -p labhours-collector --bin labhours-collector --example hub_bench
fi
bin=$target/release/labhours-collector
gen=$target/release/examples/hub_bench
dir=$PWD/target/bench-hub
rm -rf "$dir"
mkdir -p "$dir"

"$gen" --sites "$sites" --write-config "$dir"
port=$(free_port)
mqtt=$(free_port)
sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" \
    -e "s/^embedded_listen = .*/embedded_listen = \"127.0.0.1:$mqtt\"/" \
    -i "$dir/hub.toml"
/usr/bin/time -v "$bin" run --config "$dir/hub.toml" >"$dir/hub.log" 2>"$dir/hub.time" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
wait_for_port "$port"

echo "== push: $sites sites × $instruments instruments × $days days, $workers at a time"
"$gen" --sites "$sites" --instruments "$instruments" --days "$days" --workers "$workers" \
  --url "http://127.0.0.1:$port"
ls -la "$dir/data/" | awk '/labhours.sqlite3$/ {printf "database: %.0f MB\n", $5 / 1e6}'

url="http://127.0.0.1:$port/api/v1/hours?from=2025-01-01&to=2026-01-01"
for label in "year, per instrument" "year, per site (group_by=unit)"; do
  q=$url
  [ "$label" != "year, per instrument" ] && q="$url&group_by=unit"
  latency_of "$label" "$q" "$requests" "$dir/answer.json"
  echo "  rows: $(grep -o '"period_start"' "$dir/answer.json" | wc -l), $(stat -c %s "$dir/answer.json") bytes"
done
kill $server; wait $server 2>/dev/null || true
trap - EXIT
grep -E "Maximum resident" "$dir/hub.time" | sed 's/^\s*/hub /'
