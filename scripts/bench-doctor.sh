#!/usr/bin/env bash
# The doctor benchmark: the doctor against the manual procedure of the support
# guides (getent, curl -v, openssl s_client, openssl ocsp), side by side on
# the same lab, for a healthy path and a blackholed one. Prints the figures
# and the ratios; BENCHMARKS.md ("Doctor") records a run.
#
# The lab:
#   healthy:    the real `tether server` on 127.0.0.1:0 (its own CA);
#   blackholed: a socat listener on 10.201.K.2:8443 inside a network namespace
#               of this script, behind `iptables -j DROP` (a silent firewall).
#               The namespace is joined by one veth pair; nothing leaves the
#               machine. It is removed on exit, also on failure.
#
# Environment:
#   RUNS=10              runs per healthy command (hyperfine)
#   BLACKHOLE_RUNS=2     runs of the blackholed doctor (each takes its deadline)
#   DEADLINE=10          the doctor's global deadline, seconds (its default)
#   MANUAL_BOUND=150     upper bound on one blackholed manual run, seconds: the
#                        manual tools wait for the OS (curl's default connect
#                        timeout is 300 s; Linux gives up on a SYN after
#                        tcp_syn_retries, 6 → ~127 s), so the bound makes the
#                        script end; a run cut by it is reported as ">= bound".
#
# Needs root (ip netns, iptables) and the programs of scripts/install-test-deps.sh.
set -euo pipefail

RUNS=${RUNS:-10}
BLACKHOLE_RUNS=${BLACKHOLE_RUNS:-2}
DEADLINE=${DEADLINE:-10}
MANUAL_BOUND=${MANUAL_BOUND:-150}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for tool in hyperfine curl openssl getent ip iptables socat python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench-doctor: $tool is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "bench-doctor: needs root for ip netns and iptables" >&2; exit 1; }

echo "bench-doctor: building the doctor example (release)"
cargo build --release -q -p tether-doctor --example doctor
doctor="$root/target/release/examples/doctor"
tether="$root/target/release/tether"
if [[ ! -x $tether ]]; then
  echo "bench-doctor: building tether (release)"
  cargo build --release -q -p tether --bin tether
fi

work=$(mktemp -d)
ns="tdoc-bench-$$"
veth="vb$$"
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  ip link del "$veth" 2>/dev/null || true
  if ip netns list | grep -qw "$ns"; then
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# --- the healthy lab: the real server -------------------------------------
"$tether" server --listen 127.0.0.1:0 --data-dir "$work/server" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  [[ -s $work/server/endpoint.json ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "bench-doctor: the server exited" >&2; exit 1; }
  sleep 0.1
done
[[ -s $work/server/endpoint.json ]] || { echo "bench-doctor: no endpoint.json within 30 s" >&2; exit 1; }
read -r url ca < <(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print(e["url"], e["ca_pem_path"])' "$work/server/endpoint.json")
# Wait until it accepts connections.
for _ in $(seq 100); do curl -s -o /dev/null --cacert "$ca" "$url/health" && break; sleep 0.1; done

# --- the blackholed lab: a namespace behind a DROP firewall ----------------
k=$(( $$ % 200 + 20 ))
while ip -4 route show | grep -q "10\.201\.$k\."; do k=$(( (k + 1) % 200 + 20 )); done
host_ip="10.201.$k.1"; ns_ip="10.201.$k.2"
ip netns add "$ns"
ip link add "$veth" type veth peer name "${veth}n"
ip link set "${veth}n" netns "$ns"
ip addr add "$host_ip/30" dev "$veth"; ip link set "$veth" up
ip -n "$ns" addr add "$ns_ip/30" dev "${veth}n"
ip -n "$ns" link set "${veth}n" up; ip -n "$ns" link set lo up
ip netns exec "$ns" socat "TCP-LISTEN:8443,bind=$ns_ip,fork,reuseaddr" SYSTEM:'echo lab' >/dev/null 2>&1 &
for _ in $(seq 50); do timeout 1 bash -c "exec 3<>/dev/tcp/$ns_ip/8443" 2>/dev/null && break; sleep 0.1; done
ip netns exec "$ns" iptables -A INPUT -p tcp --dport 8443 -j DROP
blackholed="https://$ns_ip:8443"

# --- the manual procedure, as an admin follows the guide -------------------
cat >"$work/manual.sh" <<'MANUAL'
#!/usr/bin/env bash
# Manual procedure: resolve, curl /health, look at the chain, check OCSP.
url=$1 ca=$2 dir=$3
hostport=${url#https://}; host=${hostport%:*}; port=${hostport##*:}
getent hosts "$host" || true
curl -v --cacert "$ca" "$url/health" -o /dev/null 2>"$dir/curl.log" || true
openssl s_client -connect "$host:$port" -servername "$host" -CAfile "$ca" -showcerts </dev/null >"$dir/chain.txt" 2>&1 || true
# The leaf, and its OCSP URL if it names one.
awk '/BEGIN CERT/{n++} n==1{print} /END CERT/ && n==1{exit}' "$dir/chain.txt" >"$dir/leaf.pem"
if [[ -s $dir/leaf.pem ]]; then
  ocsp=$(openssl x509 -in "$dir/leaf.pem" -noout -ocsp_uri 2>/dev/null || true)
  if [[ -n $ocsp ]]; then
    openssl ocsp -issuer "$ca" -cert "$dir/leaf.pem" -url "$ocsp" -CAfile "$ca" || true
  fi
fi
MANUAL
chmod +x "$work/manual.sh"

echo
echo "== healthy path: $url =="
hyperfine --warmup 2 --runs "$RUNS" -N --ignore-failure --export-json "$work/healthy.json" \
  -n doctor "$doctor --server $url --ca-file $ca --token bench --deadline $DEADLINE" \
  -n manual "bash $work/manual.sh $url $ca $work"

echo
echo "== blackholed path: $blackholed (iptables DROP in netns $ns) =="
hyperfine --runs "$BLACKHOLE_RUNS" -N --ignore-failure --export-json "$work/blackholed-doctor.json" \
  -n doctor "$doctor --server $blackholed --ca-file $ca --token bench --deadline $DEADLINE"
"$doctor" --server "$blackholed" --ca-file "$ca" --token bench --deadline "$DEADLINE" | tail -3 || true

echo "manual procedure, bounded at ${MANUAL_BOUND}s (one run; tcp_syn_retries=$(sysctl -n net.ipv4.tcp_syn_retries)):"
start=$(date +%s.%N)
set +e
timeout "$MANUAL_BOUND" bash "$work/manual.sh" "$blackholed" "$ca" "$work"
manual_rc=$?
set -e
end=$(date +%s.%N)
manual_bh=$(python3 -c "print(f'{$end - $start:.1f}')")
cut=""; [[ $manual_rc == 124 ]] && cut=">= "
grep -E "Failed to connect|timed out|Timeout" "$work/curl.log" | tail -1 || true

python3 - "$work" "$manual_bh" "$cut" "$DEADLINE" <<'PY'
import json, sys
work, manual_bh, cut, deadline = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
h = {r["command"]: r for r in json.load(open(f"{work}/healthy.json"))["results"]}
b = json.load(open(f"{work}/blackholed-doctor.json"))["results"][0]
d, m = h["doctor"], h["manual"]
print()
print("| path | doctor | manual procedure | manual / doctor |")
print("|---|---|---|---|")
print(f"| healthy (loopback, real tether server) | {d['mean']*1000:.1f} ms ± {d['stddev']*1000:.1f} | {m['mean']*1000:.1f} ms ± {m['stddev']*1000:.1f} | {m['mean']/d['mean']:.1f}× |")
print(f"| blackholed (iptables DROP in a netns) | {b['mean']:.2f} s (deadline {deadline:g} s) | {cut}{manual_bh:.1f} s | {cut}{manual_bh/b['mean']:.1f}× |")
PY
