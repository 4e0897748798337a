#!/usr/bin/env bash
# Reproduces the check-in figures in BENCHMARKS.md, side by side in one run:
# real server process, real HTTPS on loopback, SQLite then PostgreSQL, plus
# the endpoint agent's idle memory. Each step ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tether -p tether-agent-bin
T=./target/release/tether
PG=${TETHER_BENCH_PG:-postgres://postgres@127.0.0.1:5432/tether_bench}

fresh_pg() {
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS tether_bench WITH (FORCE)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE tether_bench"
}

echo "== SQLite, closed loop, 1,000 agents (maximum rate)"
$T bench checkin --agents 1000 --interval 0 --duration 20s --connections 32
echo "== SQLite, 100,000 agents every 20 s (5,000/s offered)"
$T bench checkin --agents 100000 --interval 20 --duration 60s --connections 64
echo "== SQLite, 100,000 agents every 30 s (the fleet target)"
$T bench checkin --agents 100000 --interval 30 --duration 60s --connections 64
echo "== PostgreSQL, closed loop, 1,000 agents (maximum rate)"
fresh_pg; $T bench checkin --agents 1000 --interval 0 --duration 20s --connections 32 --database-url "$PG"
echo "== PostgreSQL, 20,000 agents every 5 s (4,000/s offered)"
fresh_pg; $T bench checkin --agents 20000 --interval 5 --duration 60s --connections 64 --database-url "$PG"
echo "== PostgreSQL, one server then two behind HAProxy (TCP), 20,000 agents every 10 s (2,000/s offered), then kill -9 of one"
fresh_pg; $T bench checkin --two-servers --agents 20000 --interval 10 --duration 30s --connections 64 --database-url "$PG"
echo "== tether-agent idle memory"
$T bench agent-rss --idle 15s
