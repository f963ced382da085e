#!/usr/bin/env bash
# Verified-hours targets (issue 5), on generated data:
#   1. a year for N instruments (20 state changes and 3 bookings per
#      instrument-day) fully reconciled: `labhours-collector rebuild`;
#   2. GET /api/v1/hours for all instruments over the year, over HTTP from a
#      running collector: p50 and p95 of R requests (curl's time_total).
#
# Builds the collector and the generator (collector/examples/verified_bench.rs)
# in release, generates a fresh database under target/bench-verified/,
# times `rebuild` under /usr/bin/time -v (wall time, max RSS), then serves it.
#
# Usage: scripts/bench-verified.sh [-n INSTRUMENTS] [-d DAYS] [-r REQUESTS] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

instruments=3000
days=365
requests=50
build=1
while (($#)); do
  case $1 in
    -n) instruments=$2; shift 2 ;;
    -d) days=$2; shift 2 ;;
    -r) requests=$2; shift 2 ;;
    --no-build) build=; shift ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages time curl

if [ -n "$build" ]; then
  cargo build --release -p labhours-collector --bin labhours-collector --example verified_bench
fi
bin=target/release/labhours-collector
dir=$PWD/target/bench-verified
mkdir -p target

echo "== generating $instruments instruments × $days days into $dir"
target/release/examples/verified_bench --instruments "$instruments" --days "$days" --dir "$dir" --generate-only

echo "== labhours-collector rebuild"
/usr/bin/time -v "$bin" rebuild --config "$dir/collector.toml" 2>"$dir/rebuild.time"
grep -E "Elapsed|Maximum resident" "$dir/rebuild.time"

port=$(free_port)
mqtt=$(free_port)
sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" \
    -e "s/^embedded_listen = .*/embedded_listen = \"127.0.0.1:$mqtt\"/" \
    "$dir/collector.toml" >"$dir/serve.toml"
"$bin" run --config "$dir/serve.toml" >"$dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
wait_for_port "$port"

url="http://127.0.0.1:$port/api/v1/hours?from=2025-01-01&to=2026-01-01"
for label in "year" "year by month"; do
  q=$url
  [ "$label" = "year by month" ] && q="$url&period=month"
  latency_of "$label" "$q" "$requests" "$dir/answer.json"
done
ls -la "$dir"/answer.json | awk '{print "last answer:", $5, "bytes"}'
