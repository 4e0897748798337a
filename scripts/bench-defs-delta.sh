#!/usr/bin/env bash
# The definitions delta benchmark: a deterministic 1,000,000-record text
# signature database (~100 MB) and a 64 MiB binary blob, each with 0.5 % of
# its records or 4 KiB blocks changed; prints the sizes of the full object,
# the line delta and the zstd delta, and the time to make and apply each.
# BENCHMARKS.md ("Definitions deltas") records a run.
#
# Extra arguments go to the example: --records N, --binary-mib N,
# --change-permille N. Needs ~2 GiB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p tether-defs --example bench_delta -- "$@"
