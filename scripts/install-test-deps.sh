#!/usr/bin/env bash
# Installs what Tether's tests need on a fresh Debian machine. Idempotent:
# a package already present is not reinstalled. Each line says which test needs it.
set -euo pipefail

packages=(
  tinyproxy   # transport + e2e: a real HTTP proxy demanding Basic auth
  procps      # bench and e2e: ps/pgrep for process facts
  dnsmasq     # doctor: a real DNS server answering NXDOMAIN and relaying SERVFAIL
  iproute2    # doctor: network namespaces and veth pairs (refused / dropped / unreachable)
  iptables    # doctor: the firewall inside the test's namespace (DROP, REJECT tcp-reset)
  socat       # doctor: the TCP listener inside the test's namespace
  openssl     # doctor: a real OCSP responder (openssl ocsp), htpasswd hashes; bench: s_client
  squid       # doctor: a real proxy with Basic auth (basic_ncsa_auth)
  curl        # bench: the manual procedure
  hyperfine   # bench: scripts/bench-doctor.sh
  python3-pip # doctor: installs mitmproxy when the distribution has no mitmdump
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The doctor's TLS-inspection test needs a real mitmproxy (mitmdump). It comes
# from PyPI (current releases), else from Debian's older `mitmproxy` package.
if ! command -v mitmdump >/dev/null 2>&1; then
  echo "install-test-deps: installing mitmproxy"
  python3 -m pip install --quiet mitmproxy 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages mitmproxy 2>/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mitmproxy
  command -v mitmdump >/dev/null 2>&1 || { echo "install-test-deps: mitmdump still missing after pip install" >&2; exit 1; }
fi

# The PostgreSQL conformance run needs the local server; start it if it is down.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "install-test-deps: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
