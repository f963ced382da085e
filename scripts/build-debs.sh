#!/usr/bin/env bash
# Builds the Debian packages of labhours-agent and labhours-collector with
# cargo-deb and checks them (docs/release.md):
#
# - contents (`dpkg-deb -c`): binary, config under /etc/labhours (mode 640),
#   the systemd unit identical to deploy/*.service, docs; the config is a
#   conffile; Depends names adduser;
# - maintainer scripts pass `sh -n`;
# - `dpkg -i` into a throwaway root (dpkg --root, scripts run chrootless with
#   adduser/getent/chgrp/systemctl replaced by stubs that record their calls):
#   the user is created, the agent joins dialout, the config is given to the
#   service's group on the first install only; then the config is edited and
#   a newer version installed over it: the edit and its mode survive; the
#   installed binary reads the installed config; remove keeps the config,
#   purge removes it.
#
# Usage: scripts/build-debs.sh            check build: the debug binaries (what
#                                          `cargo test` built), packed as-is
#        scripts/build-debs.sh --release  the release packages
# Either way the checked packages are left in target/debian.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
release=
[ "${1:-}" = --release ] && release=1

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$target/debian"
mkdir -p "$out"

# Builds the .deb of $1 into the new folder $2 (cargo-deb deletes older
# .debs of a package where it writes one), with the revision $3 if given;
# prints its path.
build_deb() {
  local pkg=$1 dir=$2 revision=${3:+--deb-revision=$3}
  mkdir -p "$dir"
  if [ -n "$release" ]; then
    cargo deb -p "$pkg" --no-build --locked $revision -o "$dir" | tail -n 1
  else
    # The debug binaries, not rebuilt: a check of the packaging, not a release
    # (cargo-deb warns that it is meant for release profiles).
    cargo deb -p "$pkg" --no-build --profile dev --fast --quiet $revision -o "$dir" 2>/dev/null | tail -n 1
  fi
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

if [ -z "$release" ]; then
  cargo build -p labhours-agent -p labhours-collector
else
  cargo build --release --locked -p labhours-agent -p labhours-collector
fi

checked=()
for program in agent collector; do
  pkg="labhours-$program"
  conf="/etc/labhours/$program.toml"
  deb=$(build_deb "$pkg" "$work/first-$program")
  [ -f "$deb" ] || fail "$pkg: no .deb built"
  echo "== $deb"

  # Contents and control fields.
  dpkg-deb -c "$deb" >"$work/contents"
  for entry in "-rwxr-xr-x .* ./usr/bin/$pkg\$" "-rw-r----- .* .$conf\$" \
    "-rw-r--r-- .* ./usr/lib/systemd/system/$pkg.service\$" \
    "./usr/share/doc/$pkg/$program.example.toml\$"; do
    grep -Eq -- "$entry" "$work/contents" || fail "$pkg: no entry matching '$entry' in dpkg-deb -c"
  done
  dpkg-deb -I "$deb" conffiles | grep -qx "$conf" || fail "$pkg: $conf is not a conffile"
  dpkg-deb -f "$deb" Depends | grep -q adduser || fail "$pkg: Depends lacks adduser"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/lib/systemd/system/$pkg.service" |
    cmp -s - "deploy/$pkg.service" || fail "$pkg: the packaged unit differs from deploy/$pkg.service"

  # Maintainer scripts.
  dpkg-deb -e "$deb" "$work/control-$program"
  for script in postinst prerm postrm; do
    [ -x "$work/control-$program/$script" ] || fail "$pkg: no executable $script"
    sh -n "$work/control-$program/$script" || fail "$pkg: $script does not parse"
  done

  # dpkg -i into a throwaway root.
  root="$work/root-$program"
  stubs="$work/stubs-$program"
  calls="$work/calls-$program"
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$stubs"
  touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available" "$calls"
  for cmd in adduser chgrp systemctl; do
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$cmd" "$calls" >"$stubs/$cmd"
  done
  # No user labhours yet; a dialout group exists.
  printf '#!/bin/sh\necho "getent $*" >>"%s"\n[ "$1" = group ] && [ "$2" = dialout ]\n' "$calls" >"$stubs/getent"
  chmod +x "$stubs"/*
  dpkg_root() {
    PATH="$stubs:$PATH" dpkg --root="$root" --force-script-chrootless --force-depends "$@" \
      >>"$work/dpkg-$program.log" 2>&1 || { cat "$work/dpkg-$program.log" >&2; fail "$pkg: dpkg $*"; }
  }
  dpkg_root -i "$deb"
  [ -x "$root/usr/bin/$pkg" ] || fail "$pkg: not installed in the root"
  grep -q "^adduser --system --group .* labhours\$" "$calls" || fail "$pkg: postinst did not create the user"
  if [ "$program" = agent ]; then
    grep -qx "adduser --quiet labhours dialout" "$calls" || fail "$pkg: postinst did not add labhours to dialout"
  else
    ! grep -q dialout "$calls" || fail "$pkg: only the agent joins dialout"
  fi
  grep -qx "chgrp labhours $root$conf" "$calls" || fail "$pkg: the config was not given to the group labhours"
  [ "$(stat -c %a "$root$conf")" = 640 ] || fail "$pkg: $conf is not mode 640"
  "$root/usr/bin/$pkg" check-config --config "$root$conf" >/dev/null ||
    fail "$pkg: the installed binary refuses the installed config"

  # An edited config survives an upgrade, content and mode.
  echo "# edited by the technician" >>"$root$conf"
  chmod 600 "$root$conf"
  edited=$(sha256sum <"$root$conf")
  : >"$calls"
  deb2=$(build_deb "$pkg" "$work/upgrade-$program" 2)
  version2=$(dpkg-deb -f "$deb2" Version)
  dpkg --compare-versions "$version2" gt "$(dpkg-deb -f "$deb" Version)" || fail "$pkg: $version2 is not newer"
  dpkg_root -i "$deb2"
  [ "$(dpkg-query --root="$root" -W -f '${Version}' "$pkg")" = "$version2" ] || fail "$pkg: the upgrade did not install"
  [ "$(sha256sum <"$root$conf")" = "$edited" ] || fail "$pkg: the upgrade overwrote the edited config"
  [ "$(stat -c %a "$root$conf")" = 600 ] || fail "$pkg: the upgrade changed the config's mode"
  ! grep -q chgrp "$calls" || fail "$pkg: the upgrade touched the config's group"

  # Remove keeps the config; purge removes it.
  dpkg_root -r "$pkg"
  [ ! -e "$root/usr/bin/$pkg" ] || fail "$pkg: remove left the binary"
  [ -f "$root$conf" ] || fail "$pkg: remove deleted the config"
  dpkg_root -P "$pkg"
  [ ! -e "$root$conf" ] || fail "$pkg: purge left the config"
  cp "$deb" "$out/"
  checked+=("$pkg: $out/$(basename "$deb") ($(du -h "$deb" | cut -f1)): contents, conffile, unit, scripts, install, upgrade over an edited config, remove, purge")
done

echo
for line in "${checked[@]}"; do echo "  ok $line"; done
echo "debs: ${#checked[@]} packages checked"
