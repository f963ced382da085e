#!/usr/bin/env bash
# Soak version of tests/agent_kill.rs: a live agent SIGKILLed many more times
# than the suite's 25; prints kills, events stored, seqs reused and missing.
# Usage: scripts/agent-kill-soak.sh [cycles] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export LABHOURS_KILL_CYCLES="${1:-1000}"
[ -n "${2:-}" ] && export LABHOURS_KILL_SEED="$2"
cargo test --release -p labhours-tests --test agent_kill -- a_live_agent_killed --nocapture
