#!/usr/bin/env bash
# Runs README.md's runnable blocks (fenced as ```sh runnable) the way a
# newcomer would: in a fresh directory inside this checkout, one line at a
# time, each through `bash -c`. Every line must exit 0 and print the shape
# the EXPECT table below gives; `defs summary` must show every channel still
# subscribed. The first runnable block is the main command: it runs in the
# background until it prints "Tether is running", and is stopped with SIGTERM
# at the end, which must stop its agent too.
#
# Placeholders are filled, and that is all that changes in a line:
#   ID           the quickstart agent's ID (from `agents list`)
#   NEW_ID       the ID `agent enroll` printed
#   TOKEN        the secret `token create` printed
#   FINGERPRINT  the CA fingerprint quickstart printed
#   https://127.0.0.1:8443  the quickstart's address: a free port, given by
#                TETHER_LISTEN so that parallel runs on one machine never clash
#   rules.txt    a text file this script writes
#   /srv/tether-defs  a directory under the work dir
#   [--optional flags]  dropped
#   `cargo run --release --` runs as `cargo run --`, which reuses the test
#                build: --release changes how cargo optimizes the binary, not
#                which binary it picks. README_TEST_RELEASE=1 keeps --release.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Which lines each command must print (extended regexes, one per line,
# matched against stdout and stderr together). The key is a regex on the
# filled command line.
EXPECT=$(
  cat <<'EOF'
-- quickstart$	^Tether is running\.$
-- quickstart$	^  CA fingerprint: +sha256:[0-9a-f]{64}$
-- quickstart$	^ID +NAME +KIND +GROUP +STATUS +LAST SEEN +VERSION +IN POLICY +FLAGS
-- quickstart$	quickstart-agent +discovery +quickstart +ACTIVE
-- agents list$	^ID +NAME +KIND +GROUP +STATUS +LAST SEEN +VERSION +IN POLICY +FLAGS
-- agents list$	^[0-9a-f-]{36} +quickstart-agent +discovery +quickstart +ACTIVE .* yes
-- agents show [0-9a-f-]{36}$	^Agent +quickstart-agent \([0-9a-f-]{36}\)$
-- agents show [0-9a-f-]{36}$	^Status +ACTIVE$
-- agents show [0-9a-f-]{36}$	^Definitions sample +v[0-9]+, current
-- agents show [0-9a-f-]{36}$	^Status history \(newest first\):$
-- token create 	^tet_[A-Za-z0-9_-]{43}$
-- token create 	^token [0-9a-f-]{36} kind=connector group=lab policy=default valid .* uses 0/5 \(approval required\)$
-- agent enroll 	^Enrolled agent [0-9a-f-]{36} \(.*, kind connector, group lab\)\.$
-- agent enroll 	^Status: pending$
-- agents approve 	^approved .* \([0-9a-f-]{36}\)
-- policy set default --checkin-interval 30s --target ldap.corp:389$	^policy default is at revision [0-9]+:$
-- policy set default --checkin-interval 30s --target ldap.corp:389$	^  changed check-in interval: 10s -> 30s$
-- policy set default --checkin-interval 30s --target ldap.corp:389$	^  changed doctor targets: - -> ldap.corp:389$
-- policy set default --checkin-interval 30s --target ldap.corp:389$	^  now: check in every 30s ± 10 %; doctor targets: ldap.corp:389; definitions: sample every 6h
-- errors$	^TETHER-E1001  A configuration file could not be read
-- errors$	^TETHER-E6001  
-- agent posture 	"enrolled": true
-- agent posture 	"connected": true
-- defs publish 	^published main v1$
-- defs publish 	^  sha256   [0-9a-f]{64}$
-- policy set default --add-channel main$	^  changed channels: sample -> sample,main$
-- defs summary$	^Channel main$
-- defs summary$	^Channel sample$
-- defs summary$	^  subscribed [0-9]+, in policy [0-9]+, download-path problems [0-9]+, never installed [0-9]+$
-- agents update-now 	^queued definitions update [0-9a-f-]{36} for agent [0-9a-f-]{36}
-- defs mirror 	^copied [0-9]+ files to /
-- defs export 	^wrote main.tar \(
EOF
)

fail() {
  echo "readme-test: FAIL: $*" >&2
  exit 1
}

work="$root/target/readme-tour.$$"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

# The runnable blocks as "BLOCK<TAB>LINE".
awk '
  /^```sh runnable[[:space:]]*$/ { n++; inside = 1; next }
  inside && /^```[[:space:]]*$/ { inside = 0; next }
  inside && NF { print n "\t" $0 }
' "$root/README.md" >blocks.tsv
[[ -s blocks.tsv ]] || fail "README.md has no \`\`\`sh runnable block"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="https://127.0.0.1:$port"
seq 1 2000 | sed 's/^/Rule-/;s/$/:0:*:0011223344:73/' >rules.txt

declare -A vars=()
fill() {
  local line=$1
  line=$(sed -E 's/[[:space:]]+#.*$//; s/ \[[^]]*\]//g' <<<"$line")
  if [[ "${README_TEST_RELEASE:-0}" != 1 ]]; then
    line=${line//cargo run --release --/cargo run --}
  fi
  line=${line//https:\/\/127.0.0.1:8443/$url}
  line=${line//\/srv\/tether-defs/$work\/srv-tether-defs}
  for name in NEW_ID TOKEN FINGERPRINT ID; do
    if [[ -n "${vars[$name]:-}" ]]; then
      line=$(sed -E "s/(^|[^A-Za-z0-9_])$name([^A-Za-z0-9_]|\$)/\\1${vars[$name]}\\2/g" <<<"$line")
    fi
  done
  printf '%s' "$line"
}

check_shape() {
  local cmd=$1 out=$2 key pattern
  while IFS=$'\t' read -r key pattern; do
    [[ -z "$key" ]] && continue
    if grep -qE -- "$key" <<<"$cmd"; then
      grep -qE -- "$pattern" "$out" || {
        sed 's/^/    | /' "$out" >&2
        fail "\`$cmd\` printed no line matching /$pattern/"
      }
    fi
  done <<<"$EXPECT"
}

# The main command, in the background.
main_line=$(awk -F'\t' '$1 == 1 { print $2; exit }' blocks.tsv)
[[ "$main_line" == *" quickstart"* ]] || fail "the first runnable block is not the main command: $main_line"
main_cmd=$(fill "$main_line")
echo "readme-test: \$ $main_cmd   (TETHER_LISTEN=127.0.0.1:$port)"
TETHER_LISTEN="127.0.0.1:$port" bash -c "exec $main_cmd" >quickstart.log 2>&1 &
main_pid=$!
cleanup() {
  kill -TERM "$main_pid" 2>/dev/null || true
  [[ -n "${KEEP_README_TOUR:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

# Up to 20 minutes: on a fresh clone (or with README_TEST_RELEASE=1) cargo builds first.
for _ in $(seq 1 1200); do
  grep -q '^Tether is running\.$' quickstart.log && break
  kill -0 "$main_pid" 2>/dev/null || { cat quickstart.log >&2; fail "\`$main_cmd\` exited before printing \"Tether is running\""; }
  sleep 1
done
grep -q '^Tether is running\.$' quickstart.log || fail "\`$main_cmd\` never printed \"Tether is running\""
# The fleet table is printed right after; give it a moment to be flushed.
sleep 1
check_shape "$main_cmd" quickstart.log
vars[FINGERPRINT]=$(grep -oE 'sha256:[0-9a-f]{64}' quickstart.log | head -n1)

n=0
while IFS=$'\t' read -r block line; do
  [[ "$block" == 1 ]] && continue
  cmd=$(fill "$line")
  if [[ "$cmd" =~ (^|[^A-Za-z0-9_])(ID|NEW_ID|TOKEN|FINGERPRINT)([^A-Za-z0-9_]|$) ]]; then
    fail "placeholder ${BASH_REMATCH[2]} in \`$cmd\` has no value yet (the README must create it first)"
  fi
  n=$((n + 1))
  echo "readme-test: \$ $cmd"
  out="step-$n.log"
  if ! bash -c "$cmd" >"$out" 2>&1 </dev/null; then
    sed 's/^/    | /' "$out" >&2
    fail "\`$cmd\` exited with status $?"
  fi
  check_shape "$cmd" "$out"
  case "$cmd" in
    *" agents list")
      vars[ID]=$(grep -E ' quickstart-agent ' "$out" | grep -oE '^[0-9a-f-]{36}' | head -n1) ;;
    *" token create "*)
      vars[TOKEN]=$(grep -oE '^tet_[A-Za-z0-9_-]{43}$' "$out" | head -n1) ;;
    *" agent enroll "*)
      vars[NEW_ID]=$(grep -oE '^Enrolled agent [0-9a-f-]{36}' "$out" | grep -oE '[0-9a-f-]{36}') ;;
    *" defs summary")
      # The regression of issue 7: a later `policy set` must not have
      # unsubscribed the quickstart agent from any channel.
      if grep -qE '^  subscribed 0,' "$out"; then
        sed 's/^/    | /' "$out" >&2
        fail "a channel lost its subscribers: \`policy set\` cleared a list it was not given"
      fi ;;
  esac
done <blocks.tsv
((n > 0)) || fail "no tour command ran"

# SIGTERM stops the quickstart, and its agent with it.
agent_pids=$(pgrep -f -- "agent run --state-dir $work/tether-data/agent\$" || true)
[[ -n "$agent_pids" ]] || fail "the quickstart's agent process is not running"
kill -TERM "$main_pid"
for _ in $(seq 1 30); do
  kill -0 "$main_pid" 2>/dev/null || break
  sleep 1
done
kill -0 "$main_pid" 2>/dev/null && fail "the main command did not stop within 30 s of SIGTERM"
grep -q '^Stopped\.' quickstart.log || { cat quickstart.log >&2; fail "the main command did not say it stopped"; }
for pid in $agent_pids; do
  kill -0 "$pid" 2>/dev/null && fail "the quickstart's agent (pid $pid) outlived it"
done
echo "readme-test: ok: the main command and $n tour commands ran as README.md says"
