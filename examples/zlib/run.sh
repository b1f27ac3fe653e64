#!/bin/sh
# zlib (Debian's upstream tarball of 1.2.13), built for wasm32-wasi, its own `make test`
# (plain Makefile: example and minigzip run through shell pipelines) under wasmbinfmt.
#   examples/zlib/run.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PROFILE (builtin, wasmtime-cli, ...: `wasmbinfmt --profile`), RUNNER=proot
# (the proot -q baseline) or RUNNER=native (a native build), WASMBINFMT: see ../runner.sh.
# Only build settings are given: CC, AR, RANLIB for wasm32-wasi, and --static (wasm has
# no shared libraries); the test logic is zlib's. Exit 0 when both test groups pass.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
. "$here/../runner.sh"
src=$("$here/../fetch-debian-source.sh" zlib "$work")
cd "$src"
if building_for_wasm; then
    export CC="clang --target=wasm32-wasi --sysroot=/usr" AR=llvm-ar RANLIB=llvm-ranlib
fi
export CFLAGS=-O2
$configure_under ./configure --static > configure.out
make -j2 > build.out
under_test make test > test.out 2>&1 || true
cat test.out
passed=$(grep -c "^	*\*\*\* zlib .*test OK \*\*\*" test.out || true)
report_row "zlib \`make test\`" "$passed of 2 groups (static, 64-bit: 3 runs each)" \
    $((2 - passed)) "none expected"
echo "zlib: $passed of 2 test groups passed (static, 64-bit); make test ${test_seconds} s, $(runner_label)"
[ "$passed" = 2 ]
