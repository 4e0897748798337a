#!/usr/bin/env bash
# Installs what Tether's tests need on a fresh Debian machine. Idempotent:
# a package already present is not reinstalled. Each line says which test needs it.
set -euo pipefail

packages=(
  tinyproxy   # transport + e2e: a real HTTP proxy demanding Basic auth
  procps      # bench and e2e: ps/pgrep for process facts
  dnsmasq     # doctor: a real DNS server answering NXDOMAIN and relaying SERVFAIL
  iproute2    # doctor, sshd, pebble: network namespaces and veth pairs (refused / dropped / unreachable; pebble's own namespace)
  iptables    # doctor: the firewall inside the test's namespace (DROP, REJECT tcp-reset)
  socat       # doctor: the TCP listener inside the test's namespace; e2e defs: TLS around the test relay
  openssl     # doctor: a real OCSP responder (openssl ocsp), htpasswd hashes; bench: s_client; deploy: pkcs12 reads the keystore, s_server serves it
  squid       # doctor: a real proxy with Basic auth (basic_ncsa_auth); e2e defs: downloads through it
  curl        # bench: the manual procedure
  hyperfine   # bench: scripts/bench-doctor.sh
  python3-pip # doctor: installs mitmproxy when the distribution has no mitmdump
  python3-venv # e2e openapi: schemathesis lives in its own venv (/opt/tether-venv)
  nginx       # e2e defs (nginx_mirror_*): serves a `tether defs mirror` tree over HTTPS; deploy (tether-deploy/tests/pem_nginx.rs): serves the deployed PEM set, reloaded for real; the test runs its own nginx, never the service
  faketime    # e2e defs (nginx_mirror_*): libfaketime moves the agent's clock past a frozen mirror's expiry
  haproxy     # doctor: a real load balancer whose backend is down answers 503 (tether-testlab::haproxy); e2e scaleout: TCP passthrough sending the PROXY protocol v1/v2
  ssl-cert    # e2e scaleout: the snakeoil `localhost` certificate Debian's PostgreSQL serves TLS with (ssl = on), which the database TLS test verifies
  dovecot-imapd # scan: a real IMAP server offering STARTTLS (tether-testlab::dovecot); the test runs its own, never the service
  dovecot-pop3d # scan: the same dovecot's POP3 with STLS
  nmap        # bench: scripts/bench-discovery.sh compares `tether scan run` with nmap's ssl-cert (sslyze comes from pip there)
  time        # bench: /usr/bin/time -v for peak RSS (scripts/bench-discovery.sh)
  default-jre-headless # deploy (tether-deploy/tests/keystores.rs): keytool reads the deployed PKCS#12 and Java keystores
  slapd       # scan: a real LDAP server with StartTLS (tether-testlab::slapd); the test runs its own, never the service
  pebble      # acme (tether-pki/tests/acme_pebble.rs): a real ACME server (RFC 8555) the ACME client registers, orders and finalizes against, run in the test's network namespace (tether-testlab::pebble)
  postfix     # scan: a real SMTP server offering STARTTLS (tether-testlab::postfix); the test runs its own instance (postfix -c DIR), never the system one
  groff-base  # e2e clidoc: groff -ww renders every generated man page and must print no warning
  openssh-server # deploy (tether-deploy/tests/ssh_remote.rs): a real sshd in the test's network namespace for remote targets (tether-testlab::sshd); the test runs its own, never the service
  sudo        # deploy (tether-deploy/tests/ssh_remote.rs): a remote target written through `sudo -n` by an unprivileged SSH user
  postgresql-client # e2e backup: pg_dump and pg_restore, which `tether backup` and `tether restore` run on a PostgreSQL control plane
  systemd     # e2e deb: systemd-analyze verify reads the packages' units; on a machine whose PID 1 is not systemd it installs the tools and starts nothing
  binutils    # e2e deb: scripts/package-deb.sh strips the packaged binaries' debug info (strip), and the test reads their sections (readelf)
  adduser     # e2e deb: the packages' postinst creates the system user tether with adduser --system
  tcpdump     # e2e capture: `tether-agent capture` records the agent's traffic with it
  tshark      # e2e capture: reads the capture's pcap and decrypts it with the TLS key log
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix's package asks how the host sends mail: not at all. The tests
  # write their own main.cf and never touch /etc/postfix.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  # Wireshark asks whether non-root users may capture: no, the tests only
  # read files with tshark.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  # Packages with a service (nginx) must not start one on install: the tests
  # run their own instances on loopback ports. policy-rc.d answering 101
  # tells invoke-rc.d (and deb-systemd-invoke) not to start anything; an
  # existing policy-rc.d (a container's) is left as it is.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  ((status == 0)) || exit "$status"
  # Nor at the next boot, on a machine run by systemd.
  if [[ " ${missing[*]} " == *" nginx "* && -d /run/systemd/system ]]; then
    systemctl disable --now nginx.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" openssh-server "* && -d /run/systemd/system ]]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" slapd "* && -d /run/systemd/system ]]; then
    systemctl disable --now slapd.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" postfix "* && -d /run/systemd/system ]]; then
    systemctl disable --now postfix.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" dovecot-imapd "* && -d /run/systemd/system ]]; then
    systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
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

# The OpenAPI e2e test (crates/tether/tests/e2e/openapi.rs) runs schemathesis
# from PyPI against a live server, in a venv of its own at a fixed path and
# at a pinned version, so the system Python stays untouched.
SCHEMATHESIS_VERSION=4.32.5
if ! /opt/tether-venv/bin/schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "install-test-deps: installing schemathesis $SCHEMATHESIS_VERSION in /opt/tether-venv"
  python3 -m venv /opt/tether-venv
  /opt/tether-venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  /opt/tether-venv/bin/schemathesis --version | grep -q "$SCHEMATHESIS_VERSION" \
    || { echo "install-test-deps: schemathesis $SCHEMATHESIS_VERSION missing after pip install" >&2; exit 1; }
fi

# The PostgreSQL conformance run needs the local server; start it if it is down.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "install-test-deps: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
