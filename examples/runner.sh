# Sourced by the examples' run.sh: `under_test CMD...` runs a project's test command under
# the runner chosen by the environment:
#   RUNNER=wasmbinfmt (default)  wasmbinfmt --profile "${PROFILE:-builtin}" -- CMD...
#   RUNNER=proot                 proot -q WRAPPER CMD... (the baseline: proot -q takes one
#                                ELF emulator and gives it QEMU options; the wrapper,
#                                scripts/bench/proot-wasm-wrapper.c, drops them and runs
#                                wasmbinfmt-wasi)
#   RUNNER=native                CMD... as it is, the project built for the host instead
#                                (the reference for time: `building_for_wasm` is false)
#   RUNNER=cargo-runner          CMD... as it is, built for wasm: cargo runs the tests with
#                                the runner its variable names (examples/cargo only)
#   RUNNER=go-wrapper            CMD... as it is, built for wasm: go runs the tests with
#                                Go's own go_wasip1_wasm_exec (examples/go only)
#   RUNNER=wasmtime-run          CMD... as it is: its commands name `wasmtime run` for
#                                each wasm tool (examples/avr-libc only)
# and leaves the command's time in seconds in $test_seconds. `runner_label` names the
# runner (builtin, wasmtime-cli, ..., proot or native); $configure_under is what runs
# the project's configure (wasmbinfmt, for wasm builds: it runs their test programs);
# `report_row PROJECT PASSED FAILED EXPECTED [TIME]` writes the results table's row to
# $work/result.md (examples/table.sh collects them; TIME: "$test_seconds s" by default).
# Needs $here (the sourcing script's directory) and $work.
wasmbinfmt=${WASMBINFMT:-wasmbinfmt}
mkdir -p "$work"
rm -f "$work/result.md"  # a row left by an earlier run in the same WORKDIR
# The runner's compiled modules are kept in the work directory: a run starts with none,
# as on a fresh machine, and takes nothing from, or leaves nothing to, the next.
export WASMBINFMT_CACHE_DIR="$work/module-cache"
# So does the wasmtime CLI (its cache, on by default, is under $XDG_CACHE_HOME/wasmtime).
export XDG_CACHE_HOME="$work/cache-home"

runner_label() {
    case ${RUNNER:-wasmbinfmt} in
        proot|native|cargo-runner|go-wrapper|wasmtime-run) echo "$RUNNER" ;;
        *) echo "${PROFILE:-builtin}" ;;
    esac
}

building_for_wasm() {
    [ "${RUNNER:-wasmbinfmt}" != native ]
}

if building_for_wasm; then configure_under="$wasmbinfmt --"; else configure_under=; fi

under_test() {
    case ${RUNNER:-wasmbinfmt} in
        proot)
            wrapper=$work/proot-wasm-wrapper
            cc -O2 -DEMULATOR="\"$(command -v wasmbinfmt-wasi)\"" -o "$wrapper" \
                "$here/../../scripts/bench/proot-wasm-wrapper.c"
            set -- proot -q "$wrapper" "$@" ;;
        native|cargo-runner|go-wrapper|wasmtime-run) ;;
        *) set -- $wasmbinfmt --profile "${PROFILE:-builtin}" -- "$@" ;;
    esac
    start=$(date +%s.%N)
    status=0
    "$@" || status=$?
    test_seconds=$(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $start }")
    return $status
}

report_row() {
    echo "| $1 | $(runner_label) | $2 | $3 | $4 | ${5:-$test_seconds s} |" > "$work/result.md"
}
