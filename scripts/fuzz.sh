#!/usr/bin/env bash
# Runs every fuzz target with cargo-fuzz (libFuzzer, nightly), one after the
# other, for SECONDS each (default 300). The bodies are in
# crates/tether-fuzz; CI runs a short stable smoke of them through
# `cargo nextest run --workspace` (crates/tether-fuzz/tests/smoke.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# One libFuzzer job at a time: the targets share the machine. A crash
# leaves its input in fuzz/artifacts/<target>/; fix the code, then copy the
# input to fuzz/corpus/<target>/crash-<what> so the smoke replays it.
# Prints one summary line per target (time, executions, result).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...] (SECONDS a positive whole number)" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "installing the nightly toolchain (cargo-fuzz needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

status=0
summary=()
for target in "${targets[@]}"; do
    log="fuzz/target/${target}.log"
    mkdir -p fuzz/target "fuzz/corpus/${target}"
    echo "== ${target}: ${seconds}s" >&2
    # A scratch corpus dir first (grown by libFuzzer, not checked in), then
    # the checked-in seeds as a read-only second dir.
    work="fuzz/target/corpus-${target}"
    mkdir -p "$work"
    set +e
    (cd fuzz && cargo +nightly fuzz run "$target" \
        "target/corpus-${target}" "corpus/${target}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
        >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        result="FAILED (exit ${rc}; see ${log} and fuzz/artifacts/${target}/)"
        status=1
    fi
    summary+=("${target}: ${seconds}s, ${execs:-?} executions, ${result}")
done

printf '%s\n' "${summary[@]}"
exit "$status"
