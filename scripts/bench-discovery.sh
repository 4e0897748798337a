#!/usr/bin/env bash
# The discovery benchmark (issue #9, "Performance"): `tether scan run` against
# `nmap -Pn -p443,8443 --script ssl-cert` and `sslyze --certinfo`, side by side
# in one run on the same 508 targets of a /24 inside network namespaces of this
# script. Prints one table per run (no delay, then 50 ms of netem delay);
# BENCHMARKS.md ("Discovery") records a run.
#
# The lab (nothing leaves the machine; everything is removed on exit):
#   lab namespace    holds 10.77.0.1-254 (the 254 usable addresses of
#                    10.77.0.0/24) on its end of a veth pair, one nginx with
#                    128 `listen ADDR:PORT ssl` lines, and an iptables DROP
#                    rule for 10.77.0.128/25;
#   client namespace holds 10.77.1.1/32 on the other end, with a route to
#                    10.77.0.0/24 on the veth; the three tools run here, so
#                    no target is an address of the scanner or of the host.
#   targets          10.77.0.1-254 x ports 443,8443 = 508 endpoints:
#     TLS (128)      443 on .1-.64, 8443 on .33-.96; nginx serves
#                    leaf + intermediate, signed by a lab root (openssl):
#                    root -> intermediate -> leaf (EC P-256, SANs: the 96 IPs)
#     refused (126)  the other port of .1-.96 (64) and both ports of
#                    .97-.127 (62): nothing listens, the kernel answers RST
#     dropped (254)  both ports of .128-.254: iptables DROP, no answer
#   delay            the second run adds `tc qdisc add dev <lab veth> root
#                    netem delay 50ms`: every packet from the lab waits 50 ms
#                    (+50 ms of round-trip time). A kernel without sch_netem
#                    gets the same delay from a userspace relay between two
#                    TUN devices (see set_delay below); the run prints which,
#                    and the measured TCP connect time.
#
# The connect timeout for dropped targets is the same for the three tools:
#   sslyze  5 s, its fixed network timeout (ServerNetworkConfiguration's
#           network_timeout; the CLI has no flag for it);
#   tether  --connect-timeout 5s (--handshake-timeout 5s, its default) as
#           the cap: by default the limit adapts to the round trips of the
#           endpoints that answered (a silent port then gets a second try,
#           tether_scan::rtt); the "fixed" row waits the whole 5 s;
#   nmap    has no connect timeout in a SYN scan: a probe waits an adaptive
#           RTT timeout, capped here by --max-rtt-timeout 5s, and is resent
#           (--max-retries, default 10); -n (no reverse DNS: the namespace has
#           no resolver).
#
# Each tool runs under /usr/bin/time -v: wall time is "Elapsed (wall clock)",
# peak RSS is "Maximum resident set size". Chains are counted from each tool's
# output: tether `--json` (a chain that verifies to the lab root with no
# verdict), sslyze `--json_out` (path validation against --certinfo_ca_file
# succeeds), nmap -oX (ssl-cert shows the leaf only).
#
# Environment:
#   CONNECT_TIMEOUT=5        seconds, for tether and sslyze's fixed value
#                            (changing it only changes tether and nmap)
#   CONCURRENCY=512          tether --concurrency (all 508 endpoints at once)
#   DELAYS="0 50"            the runs: netem delay in ms, 0 = none
#   TETHER_EXTRA_TIMEOUTS="" extra tether rows with other connect timeouts,
#                            e.g. "1s" (labelled as such)
#   TETHER_FIXED=1           a tether row with --fixed-connect-timeout (every
#                            silent port waits the whole timeout), beside the
#                            default adaptive one; 0 to leave it out
#   TETHER=path              the tether binary (default target/release/tether,
#                            built if missing)
#
# Needs root (ip netns, iptables, tc).
set -euo pipefail

CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-5}
CONCURRENCY=${CONCURRENCY:-512}
DELAYS=${DELAYS:-"0 50"}
TETHER_EXTRA_TIMEOUTS=${TETHER_EXTRA_TIMEOUTS:-}
TETHER_FIXED=${TETHER_FIXED:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ $(id -u) == 0 ]] || { echo "bench-discovery: needs root for ip netns, iptables and tc" >&2; exit 1; }

# --- what the benchmark needs ----------------------------------------------
need=()
command -v nmap >/dev/null 2>&1 || need+=(nmap)
[[ -x /usr/bin/time ]] || need+=(time)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if ((${#need[@]})); then
  echo "bench-discovery: installing ${need[*]}"
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
if ! command -v sslyze >/dev/null 2>&1; then
  echo "bench-discovery: installing sslyze (pip)"
  python3 -m pip install --quiet sslyze 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages sslyze
  hash -r
fi
sslyze=$(command -v sslyze) || { echo "bench-discovery: sslyze still missing after pip install" >&2; exit 1; }
nmap=$(command -v nmap)

tether=${TETHER:-$root/target/release/tether}
if [[ -n ${CARGO_TARGET_DIR:-} && -z ${TETHER:-} ]]; then tether=$CARGO_TARGET_DIR/release/tether; fi
if [[ ! -x $tether ]]; then
  echo "bench-discovery: building tether (release)"
  cargo build --release --locked -q -p tether --bin tether
fi

# --- the lab ---------------------------------------------------------------
work=$(mktemp -d)
lab="tdisc-lab-$$"
cli="tdisc-cli-$$"
veth_l="tdl$$"; veth_c="tdc$$"
veth_l=${veth_l:0:15}; veth_c=${veth_c:0:15}
nginx_pid=""
cleanup() {
  set +e
  if [[ -n $nginx_pid ]]; then kill "$nginx_pid" 2>/dev/null; fi
  if [[ -n ${relay_pid:-} ]]; then kill "$relay_pid" 2>/dev/null; fi
  for ns in "$lab" "$cli"; do
    if ip netns list | grep -qw "$ns"; then
      # Only processes of our own namespaces (nginx workers, a cut-off tool).
      ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
      sleep 0.2
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
      ip netns del "$ns" 2>/dev/null
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

ip netns add "$lab"
ip netns add "$cli"
ip link add "$veth_l" type veth peer name "$veth_c"
ip link set "$veth_l" netns "$lab"
ip link set "$veth_c" netns "$cli"
{
  for i in $(seq 1 254); do echo "addr add 10.77.0.$i/24 dev $veth_l"; done
  echo "link set $veth_l up"
  echo "link set lo up"
  echo "route add 10.77.1.1/32 dev $veth_l"
} >"$work/lab.ip"
ip -n "$lab" -batch "$work/lab.ip"
ip -n "$cli" addr add 10.77.1.1/32 dev "$veth_c"
ip -n "$cli" link set "$veth_c" up
ip -n "$cli" link set lo up
ip -n "$cli" route add 10.77.0.0/24 dev "$veth_c"

# The endpoints of the layout above.
tls_eps=()
for i in $(seq 1 64); do tls_eps+=("10.77.0.$i:443"); done
for i in $(seq 33 96); do tls_eps+=("10.77.0.$i:8443"); done
: >"$work/targets.txt"
for i in $(seq 1 254); do for p in 443 8443; do echo "10.77.0.$i:$p" >>"$work/targets.txt"; done; done

# --- the lab PKI: root -> intermediate -> leaf -----------------------------
pki="$work/pki"; mkdir -p "$pki"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec "$pki/root.key"; ec "$pki/int.key"; ec "$pki/leaf.key"
openssl req -x509 -new -key "$pki/root.key" -subj "/CN=Tether Bench Root" -days 30 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$pki/root.pem" 2>/dev/null
openssl req -new -key "$pki/int.key" -subj "/CN=Tether Bench Intermediate" -out "$pki/int.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$pki/int.ext"
openssl x509 -req -in "$pki/int.csr" -CA "$pki/root.pem" -CAkey "$pki/root.key" -CAcreateserial \
  -days 20 -sha256 -extfile "$pki/int.ext" -out "$pki/int.pem" 2>/dev/null
sans=$(for i in $(seq 1 96); do printf 'IP:10.77.0.%s,' "$i"; done)
openssl req -new -key "$pki/leaf.key" -subj "/CN=bench.tether.test" -out "$pki/leaf.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:bench.tether.test,%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "${sans%,}" >"$pki/leaf.ext"
openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/int.pem" -CAkey "$pki/int.key" -CAcreateserial \
  -days 10 -sha256 -extfile "$pki/leaf.ext" -out "$pki/leaf.pem" 2>/dev/null
cat "$pki/leaf.pem" "$pki/int.pem" >"$pki/fullchain.pem"
openssl verify -CAfile "$pki/root.pem" -untrusted "$pki/int.pem" "$pki/leaf.pem" >/dev/null

# --- nginx in the lab: 128 TLS listeners ------------------------------------
mkdir -p "$work/nginx"
{
  echo "daemon off; master_process on; worker_processes 1; user root;"
  echo "pid $work/nginx/nginx.pid; error_log $work/nginx/error.log warn;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  echo "  access_log off;"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $work/nginx/$t;"; done
  echo "  ssl_certificate $pki/fullchain.pem; ssl_certificate_key $pki/leaf.key;"
  echo "  ssl_protocols TLSv1.2 TLSv1.3;"
  echo "  server {"
  for ep in "${tls_eps[@]}"; do echo "    listen $ep ssl;"; done
  echo "    location / { return 200 \"bench\\n\"; }"
  echo "  }"
  echo "}"
} >"$work/nginx/nginx.conf"
ip netns exec "$lab" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx/out.log" 2>&1 &
nginx_pid=$!
listening=0
for _ in $(seq 100); do
  listening=$(ip netns exec "$lab" ss -Hltn | grep -c 'LISTEN' || true)
  ((listening >= 128)) && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/out.log" "$work/nginx/error.log" >&2 || true; echo "bench-discovery: nginx exited" >&2; exit 1; }
  sleep 0.1
done
((listening >= 128)) || { echo "bench-discovery: nginx listens on $listening of 128 endpoints" >&2; exit 1; }
# The silent half.
ip netns exec "$lab" iptables -A INPUT -p tcp -d 10.77.0.128/25 -j DROP

# Sanity, from the client: one TLS endpoint verifies, one refuses.
ip netns exec "$cli" openssl s_client -connect 10.77.0.40:8443 -CAfile "$pki/root.pem" -verify_return_error \
  </dev/null >"$work/sanity.txt" 2>&1 || { cat "$work/sanity.txt" >&2; echo "bench-discovery: the lab's TLS does not verify" >&2; exit 1; }
if ip netns exec "$cli" timeout 3 bash -c 'exec 3<>/dev/tcp/10.77.0.100/443' 2>/dev/null; then
  echo "bench-discovery: 10.77.0.100:443 should refuse" >&2; exit 1
fi

echo "bench-discovery: lab ready: 508 targets (10.77.0.1-254 x 443,8443): 128 TLS, 126 refused, 254 dropped"
echo "bench-discovery: tether $("$tether" --version 2>/dev/null | head -1), $("$nmap" --version | head -1), sslyze $("$sslyze" --help >/dev/null 2>&1; python3 -c 'import importlib.metadata as m; print(m.version("sslyze"))')"
echo "bench-discovery: connect timeout ${CONNECT_TIMEOUT}s (sslyze: fixed 5 s; nmap: --max-rtt-timeout ${CONNECT_TIMEOUT}s); tether --concurrency $CONCURRENCY"

# --- the runs --------------------------------------------------------------
# One tool under /usr/bin/time -v in the client namespace; the time report goes
# to $1.time, stdout to $1.out, stderr to $1.err. Bounded by `timeout`.
measure() {
  local name=$1; shift
  set +e
  ip netns exec "$cli" timeout 900 /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err"
  local rc=$?
  set -e
  echo "$rc" >"$work/$name.rc"
  if ((rc != 0)); then echo "bench-discovery: $name exited with $rc (see below)" >&2; tail -5 "$work/$name.err" >&2 || true; fi
}

# The delay. With sch_netem (`tc qdisc add dev <lab veth> root netem delay
# 50ms`) when the kernel has it; else (this benchmark's reference VM has no
# sch_netem, nor modprobe) a userspace relay between two TUN devices, one in
# each namespace, which holds every packet from the lab for the delay: the
# routes of both namespaces move from the veth to the TUN pair.
cat >"$work/relay.py" <<'RELAY'
import fcntl, heapq, os, select, struct, sys, time
# relay.py TUN_CLIENT TUN_LAB MS_TO_CLIENT MS_TO_LAB: bounded by its parent (killed on exit).
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd
c, l = tun(sys.argv[1]), tun(sys.argv[2])
to_c, to_l = float(sys.argv[3]) / 1000, float(sys.argv[4]) / 1000
print("ready", flush=True)
q, seq = [], 0
while True:
    wait = max(0.0, q[0][0] - time.monotonic()) if q else 1.0
    ready, _, _ = select.select([c, l], [], [], wait)
    now = time.monotonic()
    for fd in ready:
        for _ in range(256):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            out, due = (l, now + to_l) if fd == c else (c, now + to_c)
            heapq.heappush(q, (due, seq, out, pkt))
            seq += 1
    now = time.monotonic()
    while q and q[0][0] <= now:
        _, _, out, pkt = heapq.heappop(q)
        try:
            os.write(out, pkt)
        except OSError:
            pass
RELAY
relay_pid=""
tun_c="tdtc$$"; tun_l="tdtl$$"; tun_c=${tun_c:0:15}; tun_l=${tun_l:0:15}
netem=0
if ip netns exec "$lab" tc qdisc add dev "$veth_l" root netem delay 1ms 2>/dev/null; then
  netem=1; ip netns exec "$lab" tc qdisc del dev "$veth_l" root
fi
set_delay() {
  local delay=$1
  if ((netem)); then
    ip netns exec "$lab" tc qdisc del dev "$veth_l" root 2>/dev/null || true
    if ((delay > 0)); then
      ip netns exec "$lab" tc qdisc add dev "$veth_l" root netem delay "${delay}ms" limit 100000
    fi
    delay_how="tc netem delay ${delay}ms on the lab's veth"
    return
  fi
  if [[ -n $relay_pid ]]; then
    kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; relay_pid=""
    ip -n "$cli" route replace 10.77.0.0/24 dev "$veth_c"
    ip -n "$lab" route replace 10.77.1.1/32 dev "$veth_l"
  fi
  delay_how="no delay (veth)"
  ((delay > 0)) || return 0
  python3 -u "$work/relay.py" "$tun_c" "$tun_l" "$delay" 0 >"$work/relay.out" 2>&1 &
  relay_pid=$!
  for _ in $(seq 50); do grep -q ready "$work/relay.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/relay.out" || { cat "$work/relay.out" >&2; echo "bench-discovery: the delay relay did not start" >&2; exit 1; }
  ip link set "$tun_c" netns "$cli"; ip link set "$tun_l" netns "$lab"
  for pair in "$cli:$tun_c" "$lab:$tun_l"; do
    local ns=${pair%%:*} dev=${pair#*:}
    ip -n "$ns" link set "$dev" txqueuelen 10000 up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.$dev.rp_filter=0"
  done
  ip -n "$cli" route replace 10.77.0.0/24 dev "$tun_c"
  ip -n "$lab" route replace 10.77.1.1/32 dev "$tun_l"
  delay_how="${delay} ms on every packet from the lab (userspace TUN relay; no sch_netem in this kernel)"
}

for delay in $DELAYS; do
  set_delay "$delay"
  run="d$delay"
  echo
  echo "== run: delay ${delay} ms: $delay_how =="
  # The round trip as the tools see it: a TCP connect to a TLS endpoint.
  ip netns exec "$cli" python3 -c '
import socket, time
t = []
for _ in range(3):
    s = time.monotonic(); socket.create_connection(("10.77.0.40", 443), timeout=5).close(); t.append((time.monotonic() - s) * 1000)
print(f"   TCP connect to 10.77.0.40:443: {min(t):.1f} ms (best of 3)")' || true
  echo "   nmap";   measure "$run-nmap" "$nmap" -n -Pn -p443,8443 --script ssl-cert --max-rtt-timeout "${CONNECT_TIMEOUT}s" -oX "$work/$run-nmap.xml" 10.77.0.1-254
  echo "   sslyze"; measure "$run-sslyze" "$sslyze" --certinfo --certinfo_ca_file "$pki/root.pem" --targets_in "$work/targets.txt" --json_out "$work/$run-sslyze.json" --quiet
  echo "   tether"; measure "$run-tether" "$tether" scan run --targets 10.77.0.1-254 --ports 443,8443 \
    --connect-timeout "${CONNECT_TIMEOUT}s" --concurrency "$CONCURRENCY" --ca-file "$pki/root.pem" --json
  if [[ $TETHER_FIXED == 1 ]]; then
    echo "   tether (fixed connect timeout)"
    measure "$run-tether-fixed" "$tether" scan run --targets 10.77.0.1-254 --ports 443,8443 \
      --connect-timeout "${CONNECT_TIMEOUT}s" --fixed-connect-timeout --concurrency "$CONCURRENCY" --ca-file "$pki/root.pem" --json
  fi
  for extra in $TETHER_EXTRA_TIMEOUTS; do
    echo "   tether (connect timeout $extra)"
    measure "$run-tether-$extra" "$tether" scan run --targets 10.77.0.1-254 --ports 443,8443 \
      --connect-timeout "$extra" --concurrency "$CONCURRENCY" --ca-file "$pki/root.pem" --json
  done
  python3 - "$work" "$run" "$delay" "$CONNECT_TIMEOUT" "$TETHER_EXTRA_TIMEOUTS" "$TETHER_FIXED" <<'PY'
import json, re, sys, xml.etree.ElementTree as ET
work, run, delay, ct, extras, fixed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(), sys.argv[6] == "1"

def timing(name):
    t = open(f"{work}/{name}.time").read()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    return secs, rss / 1024

rows = []

# nmap: open ports, and those where ssl-cert printed a certificate (leaf only).
try:
    x = ET.parse(f"{work}/{run}-nmap.xml").getroot()
    states, certs = {}, 0
    for port in x.iter("port"):
        st = port.find("state").get("state")
        states[st] = states.get(st, 0) + 1
        if any(s.get("id") == "ssl-cert" and "Subject" in (s.get("output") or "") for s in port.iter("script")):
            certs += 1
    n_eps = sum(states.values())
    ports = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    rows.append(("nmap 7 `-Pn --script ssl-cert`", *timing(f"{run}-nmap"), n_eps, certs, "n/a (leaf only)", ports))
except Exception as e:  # a tool that failed still gets its row
    rows.append(("nmap", *timing(f"{run}-nmap"), 0, 0, "-", f"no output: {e}"))

# sslyze: connectivity per target, then certinfo's path validation against
# the custom (lab) trust store.
try:
    s = json.load(open(f"{work}/{run}-sslyze.json"))
    res = s.get("server_scan_results", [])
    conn, certs, complete = {}, 0, 0
    for r in res:
        st = r.get("connectivity_status")
        conn[st] = conn.get(st, 0) + 1
        ci = ((r.get("scan_result") or {}).get("certificate_info") or {})
        deps = ((ci.get("result") or {}).get("certificate_deployments") or [])
        if deps:
            certs += 1
            ok = False
            for d in deps:
                for pv in d.get("path_validation_results") or []:
                    if (pv.get("trust_store") or {}).get("name") == "Supplied CA file":
                        if pv.get("was_validation_successful") and len(d.get("received_certificate_chain") or []) >= 2:
                            ok = True
            complete += ok
    detail = ", ".join(f"{k} {v}" for k, v in sorted(conn.items(), key=lambda kv: str(kv[0])))
    rows.append(("sslyze `--certinfo`", *timing(f"{run}-sslyze"), len(res), certs, complete, f"connectivity: {detail}"))
except Exception as e:
    rows.append(("sslyze", *timing(f"{run}-sslyze"), 0, 0, "-", f"no output: {e}"))

# tether: every endpoint's outcome; a complete chain is one that reaches the
# lab root with nothing missing; every chain's verdicts are counted.
def tether_row(name, label):
    try:
        out = json.load(open(f"{work}/{name}.out"))
        res = out["results"]
        certs = complete = verdict_ok = 0
        with_problems = {}
        for r in res:
            ch = r.get("chain")
            if ch is None:
                continue
            certs += 1
            v = ch.get("verdicts")
            if v is not None:
                verdict_ok += 1
            if ch.get("trusted") and "incomplete_chain" not in (v or []) and len(ch.get("certs", [])) >= 2:
                complete += 1
            for x in v or []:
                with_problems[x] = with_problems.get(x, 0) + 1
        outs = ", ".join(f"{k} {n}" for k, n in sorted(out["summary"]["outcomes"].items()))
        probs = "; verdicts: " + ", ".join(f"{k} {n}" for k, n in sorted(with_problems.items())) if with_problems else "; every chain verdict: ok"
        rows.append((label, *timing(name), len(res), certs, complete, outs + probs))
    except Exception as e:
        rows.append((label, *timing(name), 0, 0, "-", f"no output: {e}"))

tether_row(f"{run}-tether", f"tether `scan run` (connect {ct}s, adaptive)")
if fixed:
    tether_row(f"{run}-tether-fixed", f"tether `scan run` (connect {ct}s, fixed)")
for e in extras:
    tether_row(f"{run}-tether-{e}", f"tether `scan run` (connect {e}, adaptive)")

print()
print(f"delay {delay} ms; connect timeout {ct} s")
print("| tool | wall time | peak RSS | endpoints reported | with a certificate | complete chains | outcomes |")
print("|---|---|---|---|---|---|---|")
for name, wall, rss, n, certs, complete, detail in rows:
    print(f"| {name} | {wall:.2f} s | {rss:.1f} MiB | {n} | {certs} | {complete} | {detail} |")
PY
done
