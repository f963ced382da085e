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
