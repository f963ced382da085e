#!/usr/bin/env bash
# tests/disk_full.rs with the disk full for longer (default 600 s); needs root.
# Prints how long delivery took to resume after space returned.
# Usage: scripts/disk-full-soak.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
export LABHOURS_DISK_FULL_S="${1:-600}"
cargo test --release -p labhours-tests --test disk_full -- --ignored --nocapture
