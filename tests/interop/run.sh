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

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (at most 10 s).
wait_for_port() {
  for _ in $(seq 100); do
    if (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1 after 10 s" >&2
  return 1
}

apt_updated=
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

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
  ensure_debian_packages mosquitto
  local port
  port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto-broker.log" 2>&1 &
  pids+=($!)
  wait_for_port "$port"
  LABHOURS_MOSQUITTO="127.0.0.1:$port" run_rust_tests mosquitto interop_mqtt
  stop_peers
}

peers=("$@")
((${#peers[@]})) || peers=(mosquitto)
for peer in "${peers[@]}"; do
  "peer_$peer" || { failed=$((failed + 1)); summary+=("$peer: could not be set up"); }
done

echo
echo "Interop summary"
for line in "${summary[@]}"; do echo "  $line"; done
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
