#!/usr/bin/env bash
# Builds the previous release (.ci/previous-release) from git, once, for the
# rolling-upgrade e2e test (crates/tether/tests/e2e/rolling.rs): `git archive`
# of that commit into a scratch dir under the target dir, then
# `cargo build -p tether -p tether-agent-bin --locked` with its own target dir,
# kept across runs (a second run finds the binaries and returns at once).
#
# Output: $TETHER_PREVIOUS_RELEASE_DIR (default <target dir>/previous-release)
# holds bin/tether, bin/tether-agent and a file COMMIT naming the commit.
# If the commit is not in this checkout (a shallow clone), it is fetched; if
# that fails, a loud warning is printed and a file NOT-BUILT says why: the
# test then reports that it did not run.
#
# It also checks that crates/tether-store-sql/migrations/released.txt lists
# exactly that release's migrations, with their checksums.
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(sed -n 's/^commit=//p' .ci/previous-release)
target=${CARGO_TARGET_DIR:-target}
out=${TETHER_PREVIOUS_RELEASE_DIR:-$target/previous-release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/NOT-BUILT"

if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "previous release $commit is not in this checkout (shallow clone?): fetching it"
    if ! git fetch --quiet --depth=1 origin "$commit"; then
        msg="could not fetch the previous release $commit (.ci/previous-release): the rolling-upgrade test (e2e rolling::) did not run. Fetch the history (git fetch --unshallow) and run scripts/build-previous-release.sh."
        echo "$msg" >"$out/NOT-BUILT"
        printf '\n%s\n!!! WARNING: %s\n%s\n\n' "$(printf '!%.0s' {1..72})" "$msg" "$(printf '!%.0s' {1..72})" >&2
        exit 0
    fi
fi

# released.txt against the release itself.
dir=crates/tether-store-sql/migrations
expected=$(git ls-tree -r --name-only "$commit" -- "$dir/postgres" "$dir/sqlite" | grep '\.sql$' | sort |
    while read -r path; do
        echo "${path#"$dir"/} $(git show "$commit:$path" | sha384sum | cut -d' ' -f1)"
    done)
listed=$(grep -v '^#' "$dir/released.txt" | grep . | sort)
if [ "$expected" != "$listed" ]; then
    echo "$dir/released.txt does not list exactly the migrations of the previous release $commit:" >&2
    diff <(echo "$expected") <(echo "$listed") >&2 || true
    exit 1
fi

if [ -x "$out/bin/tether" ] && [ -x "$out/bin/tether-agent" ] \
    && [ "$(cat "$out/COMMIT" 2>/dev/null)" = "$commit" ]; then
    echo "previous release $commit already built in $out/bin"
    exit 0
fi
rm -rf "$out/bin" "$out/COMMIT"

start=$(date +%s)
src="$out/src"
rm -rf "$src"
mkdir -p "$src"
git archive "$commit" | tar -x -C "$src"
# Its own target dir beside the scratch source, kept across runs.
(cd "$src" && CARGO_TARGET_DIR="$out/target" cargo build -p tether -p tether-agent-bin --locked)
mkdir -p "$out/bin"
cp "$out/target/debug/tether" "$out/target/debug/tether-agent" "$out/bin/"
echo "$commit" >"$out/COMMIT"
echo "previous release $commit built in $out/bin in $(($(date +%s) - start)) s"
