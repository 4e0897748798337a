#!/usr/bin/env bash
# The one test command (README.md): installs what the tests need, then runs
# format check, clippy with warnings denied, and every test of the workspace
# (SQLite and PostgreSQL conformance, real server + agent processes, the proxy lab),
# then README.md's runnable blocks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

export TETHER_TEST_DATABASE_URL="${TETHER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# A second real build of the agent that differs only in its version, for the
# upgrade tests (crates/tether/tests/e2e/upgrade.rs). Only the small
# tether-agent-bin crate recompiles (a few seconds), and again for the normal
# build that nextest makes next.
agent_dir="${CARGO_TARGET_DIR:-target}/debug"
TETHER_AGENT_VERSION=99.0.0-next cargo build -p tether-agent-bin --locked
cp "$agent_dir/tether-agent" "$agent_dir/tether-agent-next"

# The previous release (.ci/previous-release), built from git once and kept
# in the target dir, for the rolling-upgrade test (e2e rolling::).
bash scripts/build-previous-release.sh
cargo nextest run --workspace --locked --no-fail-fast "$@"
cargo test --workspace --doc --locked
# README.md's runnable blocks, as a newcomer runs them (scripts/readme-test.sh).
bash scripts/readme-test.sh
