# Sourced by the examples' run.sh: `under_test CMD...` runs a project's test command under
# the runner chosen by the environment:
#   RUNNER=wasmbinfmt (default)  wasmbinfmt --profile "${PROFILE:-builtin}" -- CMD...
#   RUNNER=proot                 proot -q WRAPPER CMD... (the baseline: proot -q takes one
#                                ELF emulator and gives it QEMU options; the wrapper,
#                                scripts/bench/proot-wasm-wrapper.c, drops them and runs
#                                wasmbinfmt-wasi)
# and leaves the command's time in seconds in $test_seconds. `runner_label` names the
# runner (builtin, wasmtime-cli, ... or proot); `report_row PROJECT PASSED FAILED EXPECTED`
# writes the results table's row to $work/result.md (examples/table.sh collects them).
# Needs $here (the sourcing script's directory) and $work.
wasmbinfmt=${WASMBINFMT:-wasmbinfmt}
mkdir -p "$work"
rm -f "$work/result.md"  # a row left by an earlier run in the same WORKDIR

runner_label() {
    if [ "${RUNNER:-wasmbinfmt}" = proot ]; then echo proot; else echo "${PROFILE:-builtin}"; fi
}

under_test() {
    if [ "${RUNNER:-wasmbinfmt}" = proot ]; then
        wrapper=$work/proot-wasm-wrapper
        cc -O2 -DEMULATOR="\"$(command -v wasmbinfmt-wasi)\"" -o "$wrapper" \
            "$here/../../scripts/bench/proot-wasm-wrapper.c"
        set -- proot -q "$wrapper" "$@"
    else
        set -- $wasmbinfmt --profile "${PROFILE:-builtin}" -- "$@"
    fi
    start=$(date +%s.%N)
    status=0
    "$@" || status=$?
    test_seconds=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")
    return $status
}

report_row() {
    echo "| $1 | $(runner_label) | $2 | $3 | $4 | $test_seconds s |" > "$work/result.md"
}
