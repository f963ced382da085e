#!/usr/bin/env bash
# The dashboard in Debian's chromium (see README.md): builds the collector
# and the scenario seeder, installs playwright-core when missing, runs the
# checks with node's test runner. Screenshots land in $ARTIFACTS
# (default tests/browser/artifacts); UPDATE_DOCS_IMG=1 also copies the
# fleet and instrument pages to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
# A CJK font, so that the Chinese labels render in screenshots.
ensure_debian_packages chromium fonts-wqy-zenhei
command -v npm >/dev/null || ensure_debian_packages nodejs npm
[ -d tests/browser/node_modules/playwright-core ] ||
  (cd tests/browser && npm install --no-audit --no-fund --silent)
cargo build -p labhours-collector --bin labhours-collector --example dashboard_scenario
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export LABHOURS_COLLECTOR_BIN="$target/debug/labhours-collector"
export LABHOURS_SCENARIO_BIN="$target/debug/examples/dashboard_scenario"
export ARTIFACTS="${ARTIFACTS:-$PWD/tests/browser/artifacts}"
node --test --test-concurrency=1 tests/browser/dashboard.test.mjs
