# Sourced by the examples' run.sh: `under_test CMD...` runs a project's test command under
# the runner chosen by the environment:
#   RUNNER=wasmbinfmt (default)  wasmbinfmt --profile "${PROFILE:-builtin}" -- CMD...
#   RUNNER=proot                 proot -q WRAPPER CMD... (the baseline: proot -q takes one
#                                ELF emulator and gives it QEMU options; the wrapper,
#                                scripts/bench/proot-wasm-wrapper.c, drops them and runs
#                                wasmbinfmt-wasi)
# and leaves the command's time in seconds in $test_seconds; `runner_name` says which
# runner, for the scripts' summaries. Needs $here: the sourcing script's directory.
wasmbinfmt=${WASMBINFMT:-wasmbinfmt}

runner_name() {
    if [ "${RUNNER:-wasmbinfmt}" = proot ]; then echo "proot -q"; else echo "profile ${PROFILE:-builtin}"; fi
}

under_test() {
    if [ "${RUNNER:-wasmbinfmt}" = proot ]; then
        wrapper=$(mktemp -d)/proot-wasm-wrapper
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
