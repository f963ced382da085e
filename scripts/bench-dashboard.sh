#!/usr/bin/env bash
# Dashboard targets (issue 10) on scripts/bench-verified.sh's data (3,000
# instruments, a year, reconciled): server time of the fleet page, an
# instrument's week, the year's report (p50/p95 of R requests, curl's
# time_total on loopback), and each page's weight gzip-compressed,
# with its style sheet and script.
#
# Usage: scripts/bench-dashboard.sh [-n INSTRUMENTS] [-d DAYS] [-r REQUESTS] [--no-build]
# Reuses <target>/bench-verified when it holds a database for the same
# size; otherwise generates and rebuilds one (about a minute).
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
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages curl

if [ -n "$build" ]; then
  cargo build --release -p labhours-collector --bin labhours-collector --example verified_bench
fi
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# A copy of this build's binaries: worktrees sharing one target dir may
# replace target/release/ while the benchmark runs.
bins=$target/bench-dashboard-bin
if [ -n "$build" ] || [ ! -x "$bins/labhours-collector" ]; then
  mkdir -p "$bins"
  cp "$target/release/labhours-collector" "$target/release/examples/verified_bench" "$bins/"
fi
bin=$bins/labhours-collector
dir=$target/bench-verified
stamp="$instruments x $days"
if [ "$(cat "$dir/size" 2>/dev/null)" != "$stamp" ]; then
  if [ "$(cat "$dir/generated" 2>/dev/null)" != "$stamp" ]; then
    echo "== generating $instruments instruments × $days days into $dir"
    rm -rf "$dir"
    "$bins/verified_bench" --instruments "$instruments" --days "$days" --dir "$dir" --generate-only
    echo "$stamp" >"$dir/generated"
  fi
  echo "== labhours-collector rebuild"
  "$bin" rebuild --config "$dir/collector.toml" >/dev/null
  echo "$stamp" >"$dir/size"
fi

port=$(free_port)
mqtt=$(free_port)
sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" \
    -e "s/^embedded_listen = .*/embedded_listen = \"127.0.0.1:$mqtt\"/" \
    "$dir/collector.toml" >"$dir/serve-dashboard.toml"
"$bin" run --config "$dir/serve-dashboard.toml" >"$dir/serve-dashboard.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
wait_for_port "$port"
base="http://127.0.0.1:$port"

# Assets: what a first visit also downloads (gzip).
assets=0
for a in $(curl -sf "$base/" | grep -Eo '/assets/[^"]+' | sort -u); do
  n=$(curl -sf --compressed -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$base$a")
  assets=$((assets + n))
done
echo "assets (style sheet + htmx), gzip: $assets bytes"

time_page() {
  local label=$1 path=$2
  curl -sf -o /dev/null "$base$path"   # warm-up
  local html gz
  html=$(curl -sf -o /dev/null -w '%{size_download}' "$base$path")
  gz=$(curl -sf -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$base$path")
  for _ in $(seq "$requests"); do
    curl -sf -o /dev/null -w '%{time_total}\n' "$base$path"
  done | sort -n | awk -v label="$label" -v html="$html" -v gz="$gz" -v assets="$assets" '
    { t[NR] = $1 * 1000 }
    END {
      p50 = t[int(NR * 0.50 + 0.999)]; p95 = t[int(NR * 0.95 + 0.999)]
      printf "%-34s %3d requests  p50 %6.1f ms  p95 %6.1f ms  max %6.1f ms  html %7d B  gzip %6d B  with assets %6d B\n", label, NR, p50, p95, t[NR], html, gz, gz + assets
    }'
}

time_page "fleet (page 1 of 60)" "/"
time_page "fleet table fragment (polled)" "/fleet/table"
time_page "fleet, unit + search filter" "/?unit=Institute%201&q=Instrument%201"
time_page "instrument week" "/instruments/inst-0042?day=2025-06-04&span=week"
time_page "instrument day" "/instruments/inst-0042?day=2025-06-04"
time_page "report, year, by year" "/report?year=2025"
time_page "report, year, by month" "/report?year=2025&period=month"
time_page "exceptions, one week" "/exceptions?from=2025-06-01&to=2025-06-07"
time_page "agents" "/agents"
