#!/bin/sh
# The results table of examples/README.md: each project's own tests built natively (the
# reference), then built for wasm32-wasi under the built-in runner, the wasmtime CLI and
# the peers its users have (proot -q, cargo's runner variable, Go's exec wrapper, a
# Makefile calling wasmtime run), one after the other, each in a fresh tree with empty
# module caches (fetch and build included; the time is the test command's alone, for
# each of its phases where it has several). Exit 1 if any run is not as its script
# expects.
#   examples/table.sh [WORKDIR]   (default: a new temporary directory; each run's log is
#                                  WORKDIR/PROJECT-RUNNER.log)
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
status=0
rows=
for project in zlib pcre2 cargo go avr-libc; do
    case $project in
        # proot -q cannot run cargo's suite (rustc loses the crate's files: README.md).
        cargo) runners="native builtin wasmtime-cli cargo-runner" ;;
        go) runners="native builtin go-wrapper" ;;
        avr-libc) runners="builtin wasmtime-run" ;;  # no native cc1 of that gcc here
        *) runners="native builtin wasmtime-cli proot" ;;
    esac
    for runner in $runners; do
        tree=$work/$project-$runner
        # wasmbinfmt's profiles; the others are RUNNERs (../runner.sh)
        case $runner in builtin|wasmtime-cli) chooses=PROFILE ;; *) chooses=RUNNER ;; esac
        # The suites run again and again: three phases each (one for zlib and PCRE2)
        env "$chooses=$runner" PHASES=3 sh "$here/$project/run.sh" "$tree" > "$tree.log" 2>&1 ||
            { status=1; echo "table: $project under $runner: not as expected, see $tree.log" >&2; }
        rows="$rows$(cat "$tree/result.md" 2>/dev/null || echo "| $project | $runner | no result | | | |")
"
    done
done
echo "| suite | runner | passed | failed | of which expected | time |"
echo "|-------|--------|--------|--------|-------------------|------|"
printf '%s' "$rows"
exit $status
