#!/bin/sh
# PCRE2 (Debian's upstream tarball of 10.42), autoconf + automake: `./configure` and
# `make check` run under wasmbinfmt with a wasm32-wasi compiler, unmodified.
#   examples/pcre2/run.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PROFILE (builtin, wasmtime-cli, ...: `wasmbinfmt --profile`), RUNNER=proot
# (the proot -q baseline) or RUNNER=native (a native build), WASMBINFMT: see ../runner.sh.
# Checks that configure saw a native toolchain ("cross compiling... no": it ran its test
# programs), and that `make check` fails exactly as expected-results.txt says
# (expected-results-wasmtime-cli.txt for PROFILE=wasmtime-cli, expected-results-native.txt
# for RUNNER=native).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
. "$here/../runner.sh"
src=$("$here/../fetch-debian-source.sh" pcre2 "$work")
cd "$src"
# Build settings only (README.md says why each is needed).
if building_for_wasm; then
    export CC="clang --target=wasm32-wasi --sysroot=/usr" AR=llvm-ar RANLIB=llvm-ranlib
    export CFLAGS="-O2 -D_WASI_EMULATED_PROCESS_CLOCKS -D__HAIKU__"
    export LIBS=-lwasi-emulated-process-clocks LDFLAGS="-Wl,-z,stack-size=8388608"
else
    export CFLAGS=-O2
fi
$configure_under ./configure --disable-shared --disable-pcre2grep-callout > configure.out
grep "checking whether we are cross compiling" configure.out
grep -q "checking whether we are cross compiling... no" configure.out
make -j2 > build.out 2>&1
under_test make check > check.out 2>&1 || true
grep -E "^(PASS|FAIL|XFAIL|SKIP|ERROR): " check.out | sort > results.txt
# RunTest's own numbered test files that passed, and the numbered tests of RunGrepTest's
# first part whose output differs (RunGrepTest stops at the first part that differs).
# (Each changed line of the diff RunGrepTest prints is given the test whose section of
# testdata/grepoutput holds it, by the hunks' line numbers.)
awk 'NR == FNR { if ($0 ~ /^-+ Test [0-9]+ -+$/) t = $3; test[FNR] = t; next }
     /^@@ / { split($2, at, ","); line = -at[1]; diff = 1; next }
     diff && /^-/ { print "RunGrepTest test " test[line++]; next }
     diff && /^\+/ { print "RunGrepTest test " test[line - 1]; next }
     diff && /^ / { line++; next }
     { diff = 0 }' testdata/grepoutput RunGrepTest.log | sort -u -k3,3n > grep-differences.txt
cat results.txt grep-differences.txt
# The list a runner is held to: the wasmtime CLI and the native build have their own
# (README.md says why); every other runner, proot's baseline included (it runs
# wasmbinfmt-wasi), the built-in runner's.
case $(runner_label) in
    wasmtime-cli|native) expected_list=expected-results-$(runner_label).txt ;;
    *) expected_list=expected-results.txt ;;
esac
sort "$here/$expected_list" > expected.txt
cat results.txt grep-differences.txt | sort > actual.txt
runtest_ok=$(grep -c "^  OK$" RunTest.log || true)
runtest_failed=$(grep -c "^FAIL: RunTest$" results.txt || true)
posix_ok=$(grep -c "^PASS: pcre2posix_test$" results.txt || true)
grep_total=$(grep -c "^-* Test [0-9]* -*$" testdata/grepoutput)
grep_failed=$(wc -l < grep-differences.txt)
grep_failed_as_expected=$(comm -12 expected.txt actual.txt | grep -c "^RunGrepTest test " || true)
differing=$(sed 's/RunGrepTest test //' grep-differences.txt | tr '\n' ' ' | sed 's/ $//')
passed="RunTest $runtest_ok files, pcre2posix_test $posix_ok of 1, RunGrepTest $((grep_total - grep_failed)) of $grep_total"
failed=$((runtest_failed + 1 - posix_ok + grep_failed))
report_row "PCRE2 \`make check\`" "$passed" "$failed${differing:+: RunGrepTest $differing}" \
    "$grep_failed_as_expected of $grep_failed ($expected_list)"
summary="$passed (differing: ${differing:-none}); make check ${test_seconds} s, $(runner_label)"
if diff -u expected.txt actual.txt; then
    echo "pcre2: as $expected_list says: $summary"
else
    echo "pcre2: NOT as $expected_list says: $summary"
    exit 1
fi
