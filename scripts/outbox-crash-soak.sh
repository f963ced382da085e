#!/usr/bin/env bash
# Soak version of the outbox crash test: many more SIGKILLs than the suite's 100.
# Usage: scripts/outbox-crash-soak.sh [cycles] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export LABHOURS_CRASH_CYCLES="${1:-2000}"
[ -n "${2:-}" ] && export LABHOURS_CRASH_SEED="$2"
cargo test --release -p labhours-agent --test outbox_crash -- outbox_survives --nocapture
