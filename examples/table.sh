#!/bin/sh
# The results table of examples/README.md: each project's own tests built natively (the
# reference), then built for wasm32-wasi under the built-in runner, the wasmtime CLI and
# the proot -q baseline, one after the other, each in a fresh tree (fetch and build
# included; the time is the test command's alone). Exit 1 if any run is not as its
# script expects.
#   examples/table.sh [WORKDIR]   (default: a new temporary directory; each run's log is
#                                  WORKDIR/PROJECT-RUNNER.log)
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
status=0
rows=
for project in zlib pcre2 cargo; do
    runners="native builtin wasmtime-cli proot"
    # proot -q cannot run cargo's suite (rustc loses the crate's files: README.md).
    [ "$project" = cargo ] && runners="native builtin wasmtime-cli cargo-runner"
    for runner in $runners; do
        tree=$work/$project-$runner
        # native and proot are RUNNERs (../runner.sh); the others wasmbinfmt profiles
        case $runner in native|proot|cargo-runner) chooses=RUNNER ;; *) chooses=PROFILE ;; esac
        env "$chooses=$runner" sh "$here/$project/run.sh" "$tree" > "$tree.log" 2>&1 ||
            { status=1; echo "table: $project under $runner: not as expected, see $tree.log" >&2; }
        rows="$rows$(cat "$tree/result.md" 2>/dev/null || echo "| $project | $runner | no result | | | |")
"
    done
done
echo "| suite | runner | passed | failed | of which expected | time |"
echo "|-------|--------|--------|--------|-------------------|------|"
printf '%s' "$rows"
exit $status
