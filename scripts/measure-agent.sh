#!/usr/bin/env bash
# Steady footprint of `labhours-agent run`: resident memory and CPU with
# 4 meters polled at 1 Hz, one status port and one watched result folder.
#
# Sets up real peers like tests/interop/run.sh (installing them when missing):
# - pymodbus serving four SDM120s (unit ids 1-4) on one Modbus TCP port, as
#   behind an RTU-to-TCP gateway;
# - a socat pty pair: a writer sends a status line every 5 s into one end,
#   the agent reads the other end as its status serial port;
# - a result folder with a few files, and a writer adding one every 10 s;
# - an MQTT host pointing at a closed local port (events accumulate in the
#   outbox), or with --collector a release collector with its embedded
#   broker, so the agent publishes and deletes what is acknowledged (the
#   steady state in service);
# - with --signing (implies --collector) the agent signs: a key from
#   `labhours-agent keygen`, enrolled on the collector, every event chained
#   at append and every envelope signed at publish.
# Then runs the release agent, lets it warm up, samples VmRSS from
# /proc/<pid>/status every second and takes CPU from utime+stime in
# /proc/<pid>/stat over the measured window. Everything is stopped on exit,
# even on failure. Prints one summary line per run (and the median of runs).
#
# Usage: scripts/measure-agent.sh [-d SECONDS] [-w SECONDS] [-r RUNS] [--collector] [--signing] [--no-build] [--keep]
#   -d SECONDS   measured window (default 120)
#   -w SECONDS   warm-up before measuring (default 20)
#   -r RUNS      runs (default 1); with more, the median is printed too
#   --collector  publish to a real collector instead of a closed port
#   --signing    sign (and publish to a real collector)
#   --no-build   use target/release/labhours-agent (and -collector) as they are
#   --keep       keep the work directory (config, logs, outbox)
# The agent inherits the environment, e.g. MALLOC_ARENA_MAX=2 scripts/measure-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."

duration=120
warmup=20
runs=1
build=1
keep=
collector=
signing=
while (($#)); do
  case $1 in
    -d) duration=$2; shift 2 ;;
    -w) warmup=$2; shift 2 ;;
    -r) runs=$2; shift 2 ;;
    --collector) collector=1; shift ;;
    --signing) signing=1; collector=1; shift ;;
    --no-build) build=; shift ;;
    --keep) keep=1; shift ;;
    *) sed -n '2,33p' "$0" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
ensure_debian_packages socat time
python3 -c 'import pymodbus, sys; sys.exit(pymodbus.__version__ != "3.16.1")' 2>/dev/null ||
  ensure_pip_packages "pymodbus[serial]==3.16.1"

target_dir=${CARGO_TARGET_DIR:-target}
if [ -n "$build" ]; then
  cargo build --release -p labhours-agent ${collector:+-p labhours-collector}
fi
agent=$target_dir/release/labhours-agent
collector_bin=$target_dir/release/labhours-collector
[ -x "$agent" ] || { echo "no $agent: build it or drop --no-build" >&2; exit 1; }
[ -z "$collector" ] || [ -x "$collector_bin" ] || { echo "no $collector_bin: build it or drop --no-build" >&2; exit 1; }

mkdir -p target/measure-agent
work=$(mktemp -d "$(pwd)/target/measure-agent/run.XXXXXX")
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ -z "$keep" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # command... : retries for 10 s
  for _ in $(seq 100); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for: $*" >&2
  return 1
}

# --- peers (shared by every run) -------------------------------------------
modbus_port=$(free_port)
python3 tests/interop/pymodbus_sdm120.py tcp "$modbus_port" 4 >"$work/pymodbus.log" 2>&1 &
pids+=($!)
wait_for grep -qx ready "$work/pymodbus.log"

socat "pty,raw,echo=0,link=$work/tty-instrument" "pty,raw,echo=0,link=$work/tty-agent" \
  >"$work/socat.log" 2>&1 &
pids+=($!)
wait_for test -e "$work/tty-instrument" -a -e "$work/tty-agent"

# The instrument: a status line every 5 s.
(
  exec >"$work/tty-instrument"
  n=0
  while sleep 5; do
    n=$((n + 1))
    case $((n % 4)) in
      0) printf 'IDLE\r\n' ;;
      1) printf 'ACQUISITION STARTED sample=S%05d\r\n' "$n" ;;
      2) printf 'ACQUISITION RUNNING sample=S%05d\r\n' "$n" ;;
      3) printf 'temperature 21.%d C\r\n' $((n % 10)) ;;
    esac
  done
) &
pids+=($!)

# The result folder: a few files at each run's start, one more every 10 s.
results="$work/results"
mkdir -p "$results/2026"
seed_results() {
  find "$results" -name '*.fid' -delete
  for i in 1 2 3 4 5; do head -c 65536 /dev/urandom >"$results/2026/S0000$i.fid"; done
}
(
  n=100
  while sleep 10; do
    n=$((n + 1))
    head -c 65536 /dev/urandom >"$results/2026/.S$n.tmp"
    mv "$results/2026/.S$n.tmp" "$results/2026/S$n.fid"
  done
) &
pids+=($!)

mqtt_port=$(free_port) # nothing listens here, unless --collector

if [ -n "$collector" ]; then
  cat >"$work/collector.toml" <<TOML
data_dir = "$work/collector-data"
[site]
name = "measure"
[mqtt]
embedded_listen = "127.0.0.1:$mqtt_port"
[http]
listen = "127.0.0.1:$(free_port)"
TOML
  if [ -n "$signing" ]; then
    "$agent" keygen --out "$work/agent.key" >"$work/keygen.txt"
    public=$(awk '/^public key:/ { print $3 }' "$work/keygen.txt")
    "$collector_bin" agents enrol --config "$work/collector.toml" measure "$public" >/dev/null
  fi
  "$collector_bin" run --config "$work/collector.toml" >"$work/collector.log" 2>&1 &
  pids+=($!)
  wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port"
fi

write_config() { # path data_dir
  {
    cat <<TOML
agent_id = "measure"
instrument_id = "measure-instrument"
data_dir = "$2"
poll_interval_ms = 1000

[mqtt]
host = "127.0.0.1"
port = $mqtt_port

[state]
on_above_w = 40.0
running_above_w = 600.0

TOML
    for unit in 1 2 3 4; do
      printf '[[meters]]\nname = "m%d"\nmodel = "sdm120"\nunit_id = %d\ntcp = { host = "127.0.0.1", port = %d }\n\n' \
        "$unit" "$unit" "$modbus_port"
    done
    cat <<TOML
[status]
serial = { serial_port = "$work/tty-agent", baud_rate = 9600 }
[[status.rules]]
pattern = "ACQUISITION (STARTED|RUNNING)(?: sample=(?P<sample>\\\\S+))?"
state = "running"
[[status.rules]]
pattern = "ERROR|FAULT"
state = "fault"
[[status.rules]]
pattern = "IDLE|READY"
state = "standby"

[[results]]
folder = "$results"
include = ["**/*.fid"]
min_age_s = 2
sample_id_pattern = "(?P<sample>S\\\\d{4,})"

[log]
level = "info"
TOML
    if [ -n "$signing" ]; then
      printf '\n[signing]\nkey_file = "%s"\n' "$work/agent.key"
    fi
  } >"$1"
}

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of pid $1 (fields 14 and 15; comm may hold spaces)
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "load before: $(uptime)"
all_max=()
all_mean=()
all_cpu=()
for run in $(seq "$runs"); do
  data="$work/data-$run"
  config="$work/agent-$run.toml"
  seed_results
  write_config "$config" "$data"
  "$agent" check-config --config "$config" >/dev/null
  /usr/bin/time -v -o "$work/time-$run.txt" "$agent" run --config "$config" >"$work/agent-$run.log" 2>&1 &
  time_pid=$!
  pids+=("$time_pid")
  wait_for pgrep -P "$time_pid" >/dev/null
  pid=$(pgrep -P "$time_pid")
  sleep "$warmup"
  kill -0 "$pid" 2>/dev/null || { echo "the agent died during warm-up:" >&2; tail -20 "$work/agent-$run.log" >&2; exit 1; }

  t0=$(date +%s.%N)
  c0=$(cpu_ticks "$pid")
  max=0
  sum=0
  count=0
  for _ in $(seq "$duration"); do
    kb=$(status_kb "$pid" VmRSS) || { echo "the agent died while measured:" >&2; tail -20 "$work/agent-$run.log" >&2; exit 1; }
    ((kb > max)) && max=$kb
    sum=$((sum + kb))
    count=$((count + 1))
    sleep 1
  done
  c1=$(cpu_ticks "$pid")
  t1=$(date +%s.%N)
  hwm=$(status_kb "$pid" VmHWM)
  anon=$(status_kb "$pid" RssAnon)
  file=$(status_kb "$pid" RssFile)
  threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status")

  kill -TERM "$pid"
  wait "$time_pid" || { echo "the agent did not stop cleanly:" >&2; tail -20 "$work/agent-$run.log" >&2; exit 1; }
  rest=()
  for p in "${pids[@]}"; do [ "$p" = "$time_pid" ] || rest+=("$p"); done
  pids=("${rest[@]}")

  mean=$((sum / count))
  cpu=$(awk -v c="$((c1 - c0))" -v hz="$clk_tck" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.3f", c / hz / (t1 - t0) * 100 }')
  faults=$(grep -c 'fault' "$work/agent-$run.log" || true)
  files=$(find "$results" -name '*.fid' | wc -l)
  backlog=$(sed 's/\x1b\[[0-9;]*m//g' "$work/agent-$run.log" | sed -n 's/.*stopped; unacknowledged.* backlog=\([0-9]*\).*/\1/p')
  all_max+=("$max")
  all_mean+=("$mean")
  all_cpu+=("$cpu")
  printf 'run %d: RSS max %d KiB, steady mean %d KiB (anon %d, file %d; VmHWM %d KiB incl. start-up), CPU %s %% of one core over %d s after %d s warm-up; %d threads; %d result files in the folder at the end; %s events in the outbox at stop; %d fault lines in the log; max RSS per time -v %s KiB\n' \
    "$run" "$max" "$mean" "$anon" "$file" "$hwm" "$cpu" "$duration" "$warmup" "$threads" "$files" "${backlog:-?}" "$faults" \
    "$(awk '/Maximum resident set size/ { print $NF }' "$work/time-$run.txt")"
done
echo "load after: $(uptime)"
if ((runs > 1)); then
  echo "agent footprint, median of $runs: RSS max $(median "${all_max[@]}") KiB, steady mean $(median "${all_mean[@]}") KiB, CPU $(median "${all_cpu[@]}") % of one core (4 meters at 1 Hz, 1 status port, 1 result folder; ${duration} s after ${warmup} s warm-up)"
fi
