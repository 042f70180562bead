#!/usr/bin/env bash
# tests/deb/same-features.sh owns one check: the .deb build (--no-default-features, no
# dev-dependencies) sees every crate of tract's dependency tree with the same features as the test
# build, so it reuses the test build's tract instead of compiling it again (~11 min cold). Reads
# `cargo tree` only (a few seconds, nothing compiled). On drift it names each crate and the features
# to add to Cargo.toml's "Feature unification" block.
set -euo pipefail
cd "$(dirname "$0")/../.."

features() { # features CARGO-TREE-ARGS...: "crate version features" lines, one per crate
    cargo tree --locked -e normal -f '{p} {f}' --prefix none "$@" | sed 's/ (\*)$//; s/ (proc-macro)//' | sort -u
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo tree --locked -e normal -p tract-onnx -p tract-linalg -f '{p}' --prefix none | sed 's/ (\*)$//' | sort -u >"$tmp/closure"
features --no-default-features >"$tmp/deb"
features -e dev >"$tmp/test"
drift=0
while read -r name version; do
    deb=$(awk -v n="$name" -v v="$version" '$1 == n && $2 == v { print $3 }' "$tmp/deb")
    test=$(awk -v n="$name" -v v="$version" '$1 == n && $2 == v { print $3 }' "$tmp/test")
    if [ "$deb" != "$test" ]; then
        echo "DRIFT: $name $version: .deb build features [$deb], test build features [$test]"
        drift=1
    fi
done <"$tmp/closure"
if [ $drift = 1 ]; then
    echo "FAIL: the .deb build would compile tract again; add the missing features of the crates above" >&2
    echo "      to Cargo.toml's \"Feature unification\" block (\`cargo tree -e features -i CRATE\` shows who asks)" >&2
    exit 1
fi
echo "same features: the $(wc -l <"$tmp/closure") crates of tract's tree build alike for the .deb and the tests"
