#!/usr/bin/env bash
# Reproduces the renew-and-deploy figures in BENCHMARKS.md (issue #10), side
# by side in one run:
#
# 1. `tether bench renew`: a real `tether server` (release, SQLite, its
#    built-in CA), AGENTS real `tether-agent` processes (provisioning) and
#    one real nginx per agent serving CERTS PEM sets by SNI. CERTS deploy
#    tasks (issue, deploy, reload, verify), then `certs renew` of every
#    certificate (issue, deploy, reload, verify again); plus the CA's
#    signatures per second, in process. With ISSUER=acme:NAME the server
#    issues through the pebble below instead, registered under NAME, and
#    the agents answer http-01 in one webroot the bench serves on pebble's
#    validation port.
# 2. certbot: a real pebble (Debian's ACME test server, PEBBLE_VA_NOSLEEP=1)
#    in a network namespace of its own (`ip netns`, joined to the host by a
#    veth pair on 10.200.250.0/30), which certbot reaches over the veth;
#    pebble's validator resolves names through a real dnsmasq on the host
#    end of the veth, which answers that address, where `certbot certonly
#    --standalone` listens. certbot runs CERTBOT_CERTS times in a row (one
#    name each, as an admin runs it), issuance only since certbot does not
#    deploy.
#
# Installs nginx, pebble, certbot, dnsmasq, openssl, jq, python3 and iproute2
# when missing; builds tether and tether-agent in release when missing.
# Everything it starts stops on exit (the tether bench kills its own server,
# agents and nginx; this script kills pebble and dnsmasq and removes the
# namespace and its veth). Needs root (apt-get, and `ip netns` for pebble).
#
#   CERTS=1000 AGENTS=10 CONCURRENCY=8 CERTBOT_CERTS=50 scripts/bench-renew.sh
#   ISSUER=acme:pebble scripts/bench-renew.sh    # tether through pebble too
set -euo pipefail

CERTS=${CERTS:-1000}
AGENTS=${AGENTS:-10}
CONCURRENCY=${CONCURRENCY:-8}
CERTBOT_CERTS=${CERTBOT_CERTS:-50}
ISSUER=${ISSUER:-builtin}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# --- what the benchmark needs ----------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v pebble >/dev/null 2>&1 || need+=(pebble)
command -v certbot >/dev/null 2>&1 || need+=(certbot)
command -v dnsmasq >/dev/null 2>&1 || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip ]] || [[ -x /sbin/ip ]] || need+=(iproute2)
if ((${#need[@]})); then
  echo "bench-renew: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # no nginx service on install
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${need[@]}" || status=$?
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((status == 0)) || exit "$status"
fi
PATH=$PATH:/usr/sbin:/sbin

target=${CARGO_TARGET_DIR:-$root/target}
tether=${TETHER:-$target/release/tether}
if [[ ! -x $tether || ! -x $(dirname "$tether")/tether-agent ]]; then
  echo "bench-renew: building tether and tether-agent (release)"
  cargo build --release --locked -q -p tether -p tether-agent-bin
fi

work=$(mktemp -d /tmp/bench-renew.XXXXXX)
pids=()
# pebble's namespace and the veth joining it to the host (names <= 15 bytes).
ns=bench-renew-$$ veth_host=vbr$$ veth_ns=vbn$$ ns_made=0
host_ip=10.200.250.1 ns_ip=10.200.250.2
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((ns_made)); then   # the veth's peer and its route go with it
    ip link del "$veth_host" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

ticks=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of a process, from /proc/PID/stat
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # HOST PORT NAME LOG
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench-renew: $3 did not start:" >&2; cat "$4" >&2; exit 1
}

# --- pebble, in its namespace (for certbot, and for tether with ISSUER=acme:NAME)
if ip -4 route show | grep -q '10\.200\.250\.'; then
  echo "bench-renew: 10.200.250.0/30 is already routed here (another bench run?)" >&2; exit 1
fi
ip netns add "$ns"
ns_made=1
ip link add "$veth_host" type veth peer name "$veth_ns"
ip link set "$veth_ns" netns "$ns"
ip addr add "$host_ip/30" dev "$veth_host"
ip link set "$veth_host" up
ip -n "$ns" addr add "$ns_ip/30" dev "$veth_ns"
ip -n "$ns" link set "$veth_ns" up
ip -n "$ns" link set lo up
# Every port is free inside the namespace; on the host, the kernel picks.
dns_port=$(free_port); http_port=$(free_port); api_port=14000
dnsmasq --no-daemon --keep-in-foreground --port "$dns_port" --listen-address "$host_ip" \
  --bind-interfaces --no-resolv --no-hosts --user=root --pid-file \
  --address=/bench.test/"$host_ip" >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
wait_port "$host_ip" "$dns_port" dnsmasq "$work/dnsmasq.log"

# pebble's API certificate, from a throwaway CA that certbot is told to trust.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=bench pebble API CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$work/api.key" -out "$work/api.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:%s\n' "$ns_ip" >"$work/api.ext"
openssl x509 -req -in "$work/api.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/api.ext" -out "$work/api.pem" 2>/dev/null
cat >"$work/pebble.json" <<EOF
{ "pebble": {
  "listenAddress": "$ns_ip:$api_port",
  "managementListenAddress": "$ns_ip:15000",
  "certificate": "$work/api.pem", "privateKey": "$work/api.key",
  "httpPort": $http_port, "tlsPort": 5001,
  "ocspResponderURL": "", "externalAccountBindingRequired": false } }
EOF
# No validation sleep, and no nonces refused at random (pebble refuses 5 %
# by default to exercise clients' retries; that is not what is timed here).
# `ip netns exec` execs pebble, so $! is pebble's own pid (its CPU is read).
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 ip netns exec "$ns" \
  pebble -config "$work/pebble.json" -dnsserver "$host_ip:$dns_port" >"$work/pebble.log" 2>&1 &
pebble_pid=$!
pids+=("$pebble_pid")
wait_port "$ns_ip" "$api_port" pebble "$work/pebble.log"

# --- 1. tether ------------------------------------------------------------
echo "== tether: $CERTS certificates, $AGENTS agents, $CONCURRENCY deploys at once per agent"
acme=()
if [[ $ISSUER == acme:* ]]; then   # the server registers with the same pebble
  acme=(--acme-directory "https://$ns_ip:$api_port/dir" --acme-ca-file "$work/ca.pem"
        --http01-listen "$host_ip:$http_port")
fi
timeout 3600 "$tether" bench renew --certs "$CERTS" --agents "$AGENTS" \
  --concurrency "$CONCURRENCY" --issuer "$ISSUER" "${acme[@]}" --json >"$work/tether.json"
jq . "$work/tether.json"

# --- 2. certbot against pebble ---------------------------------------------
echo "== certbot certonly: $CERTBOT_CERTS certificates against pebble, one after the other"
cb=(--config-dir "$work/certbot/config" --work-dir "$work/certbot/work" --logs-dir "$work/certbot/logs"
    --server "https://$ns_ip:$api_port/dir" --non-interactive --agree-tos)
export REQUESTS_CA_BUNDLE=$work/ca.pem
# The account is registered once, untimed, as an admin's first run would.
timeout 120 certbot register --register-unsafely-without-email "${cb[@]}" >"$work/register.log" 2>&1 \
  || { cat "$work/register.log" >&2; exit 1; }

pebble_before=$(cpu_ticks "$pebble_pid")
TIMEFORMAT='%R %U %S'
{ time {
  for i in $(seq -w 1 "$CERTBOT_CERTS"); do
    timeout 120 certbot certonly "${cb[@]}" --standalone --http-01-address "$host_ip" \
      --http-01-port "$http_port" --key-type ecdsa --elliptic-curve secp256r1 \
      -d "certbot-$i.bench.test" >>"$work/certbot.log" 2>&1 \
      || { echo "bench-renew: certbot failed for certbot-$i.bench.test:" >&2; tail -20 "$work/certbot.log" >&2; exit 1; }
  done
} ; } 2>"$work/certbot.time"
pebble_after=$(cpu_ticks "$pebble_pid")
issued=$(find "$work/certbot/config/live" -mindepth 1 -maxdepth 1 -type d | wc -l)
read -r cb_wall cb_user cb_sys <"$work/certbot.time"

# --- side by side ------------------------------------------------------------
jq -r --argjson n "$CERTBOT_CERTS" --argjson issued "$issued" --argjson wall "$cb_wall" \
  --argjson user "$cb_user" --argjson sys "$cb_sys" \
  --argjson pebble_ticks "$((pebble_after - pebble_before))" --argjson ticks "$ticks" '
  def f1: (. * 10 | round) / 10;
  def f2: (. * 100 | round) / 100;
  (($wall * 1000) / $n) as $cb_per |
  "",
  "| run | certificates | wall | per certificate | server CPU per certificate | client CPU per certificate |",
  "|---|---|---|---|---|---|",
  "| tether: issue + deploy + reload + verify | \(.deploy.ok)/\(.certs) | \(.deploy.wall_s | f1) s | \(.deploy.per_cert_ms | f1) ms | \(.deploy.server_cpu_per_cert_ms | f2) ms | agents \(.deploy.agents_cpu_per_cert_ms | f2) ms |",
  "| tether: renew (certs renew), same steps | \(.renew.ok)/\(.certs) | \(.renew.wall_s | f1) s | \(.renew.per_cert_ms | f1) ms | \(.renew.server_cpu_per_cert_ms | f2) ms | agents \(.renew.agents_cpu_per_cert_ms | f2) ms |",
  "| certbot certonly --standalone (issuance only), pebble | \($issued)/\($n) | \($wall | f1) s | \($cb_per | f1) ms | pebble \((($pebble_ticks / $ticks) * 1000 / $n) | f2) ms | certbot \(((($user + $sys) * 1000) / $n) | f1) ms |",
  "",
  "CA alone: \(.ca_sign.signatures_per_s | round) signatures/s (\(.ca_sign.samples) CSRs, one thread)",
  "certbot per certificate / tether renew per certificate: \(($cb_per / .renew.per_cert_ms) | f1)x",
  "certbot per certificate / tether issue + deploy per certificate: \(($cb_per / .deploy.per_cert_ms) | f1)x"
' "$work/tether.json"
