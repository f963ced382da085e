#!/usr/bin/env bash
# Interop suite: labhours against the real peers it meets in the field.
#
# For each peer: install it if missing (Debian packages via apt-get, PyPI via
# pip, npm packages), start it on a free loopback port, run the real-peer
# tests (Rust tests marked #[ignore], run with --ignored), and stop it even
# when a test fails. Prints one line per peer and a closing total.
#
# Usage: tests/interop/run.sh [peer...]     (default: every peer)
set -euo pipefail
cd "$(dirname "$0")/../.."

work=$(mktemp -d)
pids=()
stop_peers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_peers; rm -rf "$work"' EXIT

# free_port, wait_for_port, wait_for_line, wait_for_paths, ensure_debian_packages, ensure_pip_packages
. scripts/lib.sh

# Runs one Rust interop test target with --ignored; records passed/failed counts.
passed=0
failed=0
summary=()
run_rust_tests() {
  local peer=$1 target=$2 log="$work/$peer.log"
  local status=0
  # Any further arguments filter the target's tests by name.
  cargo test -p labhours-tests --test "$target" -- --ignored "${@:3}" 2>&1 | tee "$log" || status=$?
  local p f
  p=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
  f=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("$peer: $p passed, $f failed")
}

peer_mosquitto() {
  ensure_debian_packages mosquitto openssl
  local port
  port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto-broker.log" 2>&1 &
  pids+=($!)
  wait_for_port "$port"
  LABHOURS_MOSQUITTO="127.0.0.1:$port" run_rust_tests mosquitto interop_mqtt
  LABHOURS_MOSQUITTO="127.0.0.1:$port" run_rust_tests mosquitto interop_collector
  stop_peers
  # Delivery end to end: these tests start (and kill, and restart) their own
  # Mosquitto processes on free ports; the TLS test makes certificates with openssl.
  ensure_debian_packages openssl
  local bin
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  LABHOURS_MOSQUITTO_BIN="$bin" run_rust_tests mosquitto-delivery delivery_mosquitto
  # The real agent and the real collector with Mosquitto restarted between them.
  LABHOURS_MOSQUITTO_BIN="$bin" run_rust_tests mosquitto-end-to-end end_to_end
}

# pymodbus, an independent Modbus implementation, plays an Eastron SDM120:
# over TCP on a free port, and over RTU on one end of a socat pty pair while
# the agent opens the other end as its serial port.
peer_pymodbus() {
  ensure_debian_packages socat || return 1
  ensure_pip_packages "pymodbus[serial]==3.16.1" || return 1
  local port
  port=$(free_port)
  python3 tests/interop/pymodbus_sdm120.py tcp "$port" >"$work/pymodbus-tcp.log" 2>&1 &
  pids+=($!)
  socat -d -d "pty,raw,echo=0,link=$work/a" "pty,raw,echo=0,link=$work/b" >"$work/socat.log" 2>&1 &
  pids+=($!)
  wait_for_paths "$work/a" "$work/b" || return 1
  python3 tests/interop/pymodbus_sdm120.py rtu "$work/a" >"$work/pymodbus-rtu.log" 2>&1 &
  pids+=($!)
  wait_for_port "$port" || return 1
  wait_for_line ready "$work/pymodbus-tcp.log" || return 1
  wait_for_line ready "$work/pymodbus-rtu.log" || return 1
  LABHOURS_PYMODBUS_TCP="127.0.0.1:$port" LABHOURS_PYMODBUS_RTU="$work/b" \
    run_rust_tests pymodbus interop_modbus
}

# Python's icalendar package, an independent RFC 5545 writer, produces a
# bookings feed (TZID with VTIMEZONE, all-day, weekly RRULE with EXDATE,
# CANCELLED, folded and escaped text) that the collector must import; then
# icalendar + recurring-ical-events expand 200 random feeds (seed 17) and
# the collector's import must give the same occurrences (docs/bookings.md).
peer_icalendar() {
  ensure_pip_packages "icalendar==7.3.0" "recurring-ical-events==3.8.2" || return 1
  python3 tests/interop/icalendar_feed.py "$work/feed.ics" || return 1
  LABHOURS_ICAL_FEED="$work/feed.ics" run_rust_tests icalendar interop_bookings
  python3 tests/interop/ical_differential.py "$work/ical-differential" 200 17 || return 1
  LABHOURS_ICAL_DIFFERENTIAL="$work/ical-differential" \
    run_rust_tests icalendar-differential interop_ical_differential --nocapture
}

# Schemathesis, an independent OpenAPI fuzzer, reads the collector's own
# /api/v1/openapi.json and checks every operation against it: no 5xx, only
# documented status codes and content types, bodies matching their schemas,
# invalid input refused. The collector runs for real (debug build, a temp
# data dir, two instruments and a few imported bookings), with one admin token.
peer_schemathesis() {
  ensure_pip_packages "schemathesis==4.32.5" || return 1
  cargo build -p labhours-collector || return 1
  local target bin dir="$work/schemathesis"
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
  bin="$target/debug/labhours-collector"
  mkdir -p "$dir"
  local http mqtt token
  http=$(free_port)
  mqtt=$(free_port)
  "$bin" token new --name schemathesis --role admin >"$dir/token.txt" || return 1
  token=$(head -n 1 "$dir/token.txt")
  {
    printf 'data_dir = "%s"\n\n[site]\nname = "schemathesis"\ntime_zone = "Asia/Shanghai"\n\n' "$dir/data"
    printf '[mqtt]\nembedded_listen = "127.0.0.1:%s"\n\n[http]\nlisten = "127.0.0.1:%s"\n\n' "$mqtt" "$http"
    sed -n '/^\[\[http.tokens\]\]/,$p' "$dir/token.txt"
    printf '\n[[instruments]]\nid = "nmr-600"\nname = "600 MHz NMR"\nunit = "Chemistry/NMR Centre"\n'
    printf '\n[[instruments]]\nid = "ms-1"\nname = "Q-TOF mass spectrometer"\nunit = "Life Sciences/Proteomics"\n'
  } >"$dir/collector.toml"
  cat >"$dir/bookings.csv" <<'CSV'
booking_id,instrument_id,user,group,usage_type,start,end,status
st-1,nmr-600,li,chem,research,2025-03-03 09:00,2025-03-03 11:00,confirmed
st-2,nmr-600,wang,chem,teaching,2025-03-04T13:00:00+08:00,2025-03-04T15:30:00+08:00,confirmed
st-3,ms-1,zhao,bio,external,2025-03-05 10:00,2025-03-05 12:00,confirmed
st-4,ms-1,zhao,bio,research,2025-03-06 10:00,2025-03-06 11:00,cancelled
CSV
  "$bin" bookings import --config "$dir/collector.toml" "$dir/bookings.csv" || return 1
  "$bin" run --config "$dir/collector.toml" >"$work/schemathesis-collector.log" 2>&1 &
  pids+=($!)
  wait_for_port "$http" || return 1
  # Checks: all of them, less those that need what this API does not have
  # (see docs/api.md, "Conformance"). Bounded: a fixed seed and
  # --max-examples per operation keep the run under a minute on 2 cores. One
  # worker: Python 3.11's ast.parse is not thread-safe ("AST constructor
  # recursion depth mismatch"), and Hypothesis calls it from every worker.
  local status=0 junit="$dir/junit.xml" root=$PWD
  (cd "$dir" && st --no-color --config-file "$root/tests/interop/schemathesis.toml" \
    run "http://127.0.0.1:$http/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples 100 \
    --seed 1 \
    --workers 1 \
    --report junit --report-junit-path "$junit") 2>&1 | tee "$work/schemathesis.log" || status=$?
  local p f
  read -r p f < <(python3 - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError):
    cases = []
bad = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
print(len(cases) - bad, bad)
PY
  )
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("schemathesis: $p passed, $f failed")
  stop_peers
}

# A full disk, for real: 8 MiB and 16 MiB tmpfs mounts under a live agent's
# outbox and under the collector's database (mounting needs root).
peer_tmpfs() {
  if [ "$(id -u)" -ne 0 ]; then
    summary+=("tmpfs: skipped (mounting a tmpfs needs root)")
    return 0
  fi
  run_rust_tests tmpfs disk_full
}

# The dashboard in Debian's chromium, driven by playwright-core from npm
# (tests/browser/): the real collector against a seeded scenario.
# tests/browser/run.sh installs chromium and playwright-core when missing.
peer_chromium() {
  local log="$work/chromium.log" status=0
  tests/browser/run.sh 2>&1 | tee "$log" || status=$?
  local p f
  p=$(grep -Eo '^# pass [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
  f=$(grep -Eo '^# fail [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("chromium: $p passed, $f failed")
}

# VictoriaMetrics from Debian takes InfluxDB's write API: the collector's
# InfluxDB sink writes to it through an outage (the test starts and stops
# its own server processes).
peer_victoria_metrics() {
  ensure_debian_packages victoria-metrics || return 1
  local bin
  bin=$(command -v victoria-metrics || echo /usr/bin/victoria-metrics)
  LABHOURS_VICTORIA_METRICS="$bin" run_rust_tests victoria-metrics interop_influx victoria_metrics
}

# InfluxDB 1.x from Debian, written through the sink's api = "v1" switch.
peer_influxdb() {
  ensure_debian_packages influxdb || return 1
  local bin
  bin=$(command -v influxd || echo /usr/bin/influxd)
  LABHOURS_INFLUXD="$bin" run_rust_tests influxdb interop_influx influxdb_1x
}

# The Debian packages, built by cargo-deb from the debug binaries and
# installed with dpkg into a throwaway root: contents, conffile, unit,
# maintainer scripts, an upgrade over an edited config, remove, purge
# (scripts/build-debs.sh; installs cargo-deb when missing).
peer_debs() {
  local log="$work/debs.log" status=0
  scripts/build-debs.sh 2>&1 | tee "$log" || status=$?
  local p f
  p=$(grep -c '^  ok ' "$log" || true)
  f=$(grep -c '^FAIL: ' "$log" || true)
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("debs: $p passed, $f failed")
}

# The Windows service code (shared/src/service/windows.rs, cfg(windows))
# compiled and linted for x86_64-pc-windows-gnu with Debian's MinGW: the
# only compile check it gets off Windows (running it is in docs/release.md).
# Skipped, and said so, when rustup cannot fetch the target.
peer_windows() {
  if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu &&
    ! rustup target add x86_64-pc-windows-gnu; then
    summary+=("windows: skipped (rustup could not install the x86_64-pc-windows-gnu target)")
    return 0
  fi
  ensure_debian_packages gcc-mingw-w64-x86-64 || return 1
  local status=0
  cargo clippy --target x86_64-pc-windows-gnu -p labhours-shared -p labhours-agent \
    -p labhours-collector -- -D warnings 2>&1 | tail -n 20 || status=$?
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    summary+=("windows: 1 passed, 0 failed (clippy -D warnings for x86_64-pc-windows-gnu)")
  else
    failed=$((failed + 1))
    summary+=("windows: 0 passed, 1 failed (clippy for x86_64-pc-windows-gnu)")
  fi
}

peers=("$@")
((${#peers[@]})) || peers=(mosquitto pymodbus icalendar schemathesis tmpfs chromium victoria_metrics influxdb debs windows)
for peer in "${peers[@]}"; do
  "peer_$peer" || { failed=$((failed + 1)); summary+=("$peer: could not be set up"); }
  stop_peers
done

echo
echo "Interop summary"
for line in "${summary[@]}"; do echo "  $line"; done
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
