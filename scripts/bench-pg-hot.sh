#!/usr/bin/env bash
# PostgreSQL's own cost per check-in (issue #12), before and after a change,
# side by side in one run, on a THROWAWAY cluster: `initdb` into a fresh
# directory under /tmp on a free port, started with pg_ctl, stopped and
# deleted at the end. The shared server on 5432 is never touched.
#
# Usage: scripts/bench-pg-hot.sh BEFORE_TETHER AFTER_TETHER
#   (two `tether` binaries, e.g. a build of the commit before and this one;
#   each runs `tether bench checkin` with its own `tether server`).
# Environment: AGENTS (1000), DURATION (20s), CONNECTIONS (32), ROUNDS (1).
#
# For autovacuum on, then off (ALTER SYSTEM + reload), each binary in turn
# on a fresh database: a closed-loop `tether bench checkin` with
# `--postgres-pid` (PostgreSQL's CPU per check-in, from /proc, every process
# of the cluster), then from pg_stat_user_tables and the catalog: updates of
# agents and how many were HOT, dead rows, and the table's and its indexes'
# size after the run.
set -euo pipefail
before=${1:?usage: $0 BEFORE_TETHER AFTER_TETHER}
after=${2:?usage: $0 BEFORE_TETHER AFTER_TETHER}
AGENTS=${AGENTS:-1000}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-1}

bin=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")
[ -x "$bin/initdb" ] || bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi

dir=$(mktemp -d /tmp/pghot-bench-XXXXXX)
chmod 755 "$dir"
[ ${#as_pg[@]} -eq 0 ] || chown postgres "$dir"
cleanup() {
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

port=55432
while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done

"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
postmaster=$(head -1 "$dir/data/postmaster.pid")
psql_() { psql -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
echo "throwaway cluster: $("$bin/postgres" --version), port $port, $dir (deleted at exit)"
echo "agents $AGENTS, closed loop over $CONNECTIONS connections, $DURATION measured per row"

printf '%-10s %-7s %8s %8s %9s %9s %9s %8s %8s %9s %9s\n' \
    autovacuum build "ckin/s" "p99 ms" "srv µs/ck" "pg µs/ck" "updates" "HOT %" "dead" "heap KiB" "index KiB"
n=0
for round in $(seq "$ROUNDS"); do
    for av in on off; do
        psql_ -d postgres -c "ALTER SYSTEM SET autovacuum = $av" -c "SELECT pg_reload_conf()" >/dev/null
        for build in before after; do
            n=$((n + 1))
            db="hot_${n}"
            psql_ -d postgres -c "CREATE DATABASE $db"
            url="postgres://postgres@127.0.0.1:$port/$db"
            tether=$before
            [ "$build" = after ] && tether=$after
            out=$("$tether" bench checkin --agents "$AGENTS" --interval 0 --duration "$DURATION" \
                --connections "$CONNECTIONS" --database-url "$url" --postgres-pid "$postmaster" --json 2>>"$dir/bench.log") || true
            # The bench's server has exited; its backends' statistics are flushed as they end.
            sleep 1
            stats=$(psql_ -d "$db" -At -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup,
                pg_relation_size('agents') / 1024, pg_indexes_size('agents') / 1024
                FROM pg_stat_user_tables WHERE relname = 'agents'")
            read -r upd hot dead heap idx <<<"$stats"
            jq -r --arg av "$av" --arg b "$build" --argjson upd "$upd" --argjson hot "$hot" \
                --argjson dead "$dead" --argjson heap "$heap" --argjson idx "$idx" \
                '[$av, $b, (.checkins_per_s|round), (.p99_ms*100|round/100),
                  (.server_cpu_us_per_checkin|round), (.postgres_cpu_us_per_checkin|round),
                  $upd, (if $upd > 0 then ($hot*1000/$upd|round/10) else 0 end), $dead, $heap, $idx,
                  (if .errors > 0 then "errors: \(.errors) \(.first_error)" else "" end)]
                 | "\(.[0])\t\(.[1])\t\(.[2])\t\(.[3])\t\(.[4])\t\(.[5])\t\(.[6])\t\(.[7])\t\(.[8])\t\(.[9])\t\(.[10])\t\(.[11])"' \
                <<<"$out" |
                awk -F'\t' '{ printf "%-10s %-7s %8s %8s %9s %9s %9s %8s %8s %9s %9s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }'
        done
    done
done
