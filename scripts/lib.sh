# Shell helpers shared by tests/interop/run.sh and the measurement scripts.
# Source it: `. scripts/lib.sh` (from the repository root).

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

# Waits until file $2 holds the line $1 (at most 10 s).
wait_for_line() {
  for _ in $(seq 100); do
    if grep -qx "$1" "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "no line '$1' in $2 after 10 s" >&2
  return 1
}

# Waits until every path given exists (at most 10 s).
wait_for_paths() {
  for _ in $(seq 100); do
    local all=1 path
    for path in "$@"; do [ -e "$path" ] || all=; done
    if [ -n "$all" ]; then return 0; fi
    sleep 0.1
  done
  echo "still missing after 10 s: $*" >&2
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

# Installs pinned PyPI packages for python3 (quietly; a no-op when present).
ensure_pip_packages() {
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "$@"
}

# Options of the bench scripts: -r RUNS (default 3), --no-build, --keep; sets
# `runs`, `build` and `keep`. Anything else prints lines 2..$1 of the
# calling script (its usage) and exits 2.
bench_options() {
  local usage_end=$1
  shift
  runs=3 build=1 keep=
  while (($#)); do
    case $1 in
      -r) runs=$2; shift 2 ;;
      --no-build) build=; shift ;;
      --keep) keep=1; shift ;;
      *) sed -n "2,${usage_end}p" "$0" >&2; exit 2 ;;
    esac
  done
}

# The release binary $1 of package $2, built first when `build` is set;
# honours CARGO_TARGET_DIR. Prints its path.
release_binary() {
  if [ -n "${build:-}" ]; then cargo build --release -p "$2" >&2; fi
  local bin=${CARGO_TARGET_DIR:-target}/release/$1
  [ -x "$bin" ] || { echo "no $bin: build it or drop --no-build" >&2; return 1; }
  echo "$bin"
}

# A fresh work directory under target/$1/ in `work`, removed on exit unless
# `keep` is set.
bench_workdir() {
  mkdir -p "target/$1"
  work=$(mktemp -d "target/$1/run.XXXXXX")
  trap 'if [ -z "$keep" ]; then rm -rf "$work"; else echo "kept $work"; fi' EXIT
}

# The median of the numbers given.
# GETs URL $2 once to warm up, then $3 times, keeping the last answer in
# file $4; prints "GET /hours ($1): N requests, p50 …, p95 …, max …" (ms,
# curl's time_total).
latency_of() {
  local label=$1 url=$2 requests=$3 answer=$4
  curl -sf -o /dev/null "$url"   # warm-up
  for _ in $(seq "$requests"); do
    curl -sf -o "$answer" -w '%{time_total}\n' "$url"
  done | sort -n | awk -v label="$label" '
    { t[NR] = $1 * 1000 }
    END {
      p50 = t[int(NR * 0.50 + 0.999)]; p95 = t[int(NR * 0.95 + 0.999)]
      printf "GET /hours (%s): %d requests, p50 %.1f ms, p95 %.1f ms, max %.1f ms\n", label, NR, p50, p95, t[NR]
    }'
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Wall-clock seconds and maximum RSS (KiB) from a `/usr/bin/time -v` report in file $1.
time_wall_s() {
  grep -F 'Elapsed (wall clock)' "$1" | awk '{print $NF}' |
    awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }'
}
time_max_rss_kb() { grep -F 'Maximum resident set size' "$1" | awk '{print $NF}'; }
# CPU seconds (user + system) from the same report: steadier than wall time on a busy machine.
time_cpu_s() { awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$1"; }
