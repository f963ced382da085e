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
  cargo test -p labhours-tests --test "$target" -- --ignored 2>&1 | tee "$log" || status=$?
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
# CANCELLED, folded and escaped text) that the collector must import.
peer_icalendar() {
  ensure_pip_packages "icalendar==7.3.0" || return 1
  python3 tests/interop/icalendar_feed.py "$work/feed.ics" || return 1
  LABHOURS_ICAL_FEED="$work/feed.ics" run_rust_tests icalendar interop_bookings
}

peers=("$@")
((${#peers[@]})) || peers=(mosquitto pymodbus icalendar)
for peer in "${peers[@]}"; do
  "peer_$peer" || { failed=$((failed + 1)); summary+=("$peer: could not be set up"); }
  stop_peers
done

echo
echo "Interop summary"
for line in "${summary[@]}"; do echo "  $line"; done
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
