#!/bin/sh
# Build the test programs in tests/fixtures/src into tests/fixtures/build:
#   portable/*.c  for wasm32-wasi with Debian's wasi-libc (NAME.wasm) and with zig's current
#                 one (NAME.zig.wasm), the host (NAME.native), aarch64 (NAME.aarch64, Debian's
#                 cross gcc) and riscv64 (NAME.riscv64, zig's, static musl);
#                 probe.c also without chdir (probe-nochdir.wasm, probe-nochdir.zig.wasm)
#   native/*.c    for the host only (NAME)
#   musl/*.c      for the host with zig's static musl (NAME.musl): musl's own posix_spawn;
#                 probe.c too (probe.static)
#   wasm/*.c      for wasm32-wasi only, as reactors (NAME.wasm: _initialize, no _start)
#   wat/*.wat     modules written by hand, in the text format (NAME.wasm, by wasmtime's
#                 wat2wasm, from the wasmtime package in $PYTHON)
# Needs (Debian): clang lld wasi-libc libclang-rt-14-dev-wasm32 gcc gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross, and PyPI's ziglang in $PYTHON (default python3).
# Running the dynamic foreign ones needs libc6-arm64-cross and libc6-riscv64-cross.
# Rebuilds only what is older than its source. For another machine (scripts/aarch64-vm.sh
# builds them here for an emulated arm64 one): FIXTURES_MACHINE=aarch64 (as uname -m names
# it) and NATIVE_CC, its compiler (aarch64-linux-gnu-gcc), into FIXTURES_OUT.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/fixtures/src
out=${FIXTURES_OUT:-$root/tests/fixtures/build}
host=${FIXTURES_MACHINE:-$(uname -m)}
native_cc=${NATIVE_CC:-cc}
mkdir -p "$out"

stale() { [ ! -e "$1" ] || [ "$2" -nt "$1" ]; }

for c in "$src"/portable/*.c; do
    name=$(basename "$c" .c)
    if stale "$out/$name.wasm" "$c"; then
        clang --target=wasm32-wasi --sysroot=/usr -Os -Wl,--strip-all -o "$out/$name.wasm" "$c"
    fi
    if stale "$out/$name.zig.wasm" "$c"; then
        "${PYTHON:-python3}" -m ziglang cc -target wasm32-wasi -Os -s -o "$out/$name.zig.wasm" "$c"
    fi
    if stale "$out/$name.native" "$c"; then
        $native_cc -Os -o "$out/$name.native" "$c" -lm
    fi
    if stale "$out/$name.riscv64" "$c"; then
        "${PYTHON:-python3}" -m ziglang cc -target riscv64-linux-musl -static -Os \
            -o "$out/$name.riscv64" "$c"
    fi
    if stale "$out/$name.aarch64" "$c"; then
        aarch64-linux-gnu-gcc -static -Os -o "$out/$name.aarch64" "$c" -lm
    fi
done
# hello dynamically linked for aarch64 and riscv64 (glibc), whose loaders only a cross
# sysroot has (libc6-arm64-cross, libc6-riscv64-cross): NAME.dyn.ARCH.
c=$src/portable/hello.c
if stale "$out/hello.dyn.aarch64" "$c"; then
    aarch64-linux-gnu-gcc -Os -o "$out/hello.dyn.aarch64" "$c"
fi
if stale "$out/hello.dyn.riscv64" "$c"; then
    "${PYTHON:-python3}" -m ziglang cc -target riscv64-linux-gnu.2.31 -Os \
        -o "$out/hello.dyn.riscv64" "$c"
fi
# probe without chdir, which makes wasi-libc leave out its emulated current directory.
c=$src/portable/probe.c
if stale "$out/probe-nochdir.wasm" "$c"; then
    clang --target=wasm32-wasi --sysroot=/usr -Os -DPROBE_WITHOUT_CHDIR -Wl,--strip-all \
        -o "$out/probe-nochdir.wasm" "$c"
fi
if stale "$out/probe-nochdir.zig.wasm" "$c"; then
    "${PYTHON:-python3}" -m ziglang cc -target wasm32-wasi -Os -s -DPROBE_WITHOUT_CHDIR \
        -o "$out/probe-nochdir.zig.wasm" "$c"
fi
for c in "$src"/native/*.c; do
    name=$(basename "$c" .c)
    if stale "$out/$name" "$c"; then
        $native_cc -O2 -Wall -Werror -pthread -o "$out/$name" "$c"
    fi
done
for c in "$src"/wasm/*.c; do
    name=$(basename "$c" .c)
    if stale "$out/$name.wasm" "$c"; then
        clang --target=wasm32-wasi --sysroot=/usr -Os -mexec-model=reactor -Wl,--strip-all \
            -o "$out/$name.wasm" "$c"
    fi
done
for w in "$src"/wat/*.wat; do
    name=$(basename "$w" .wat)
    if stale "$out/$name.wasm" "$w"; then
        "${PYTHON:-python3}" -c 'import sys, wasmtime
open(sys.argv[2], "wb").write(wasmtime.wat2wasm(open(sys.argv[1]).read()))' "$w" "$out/$name.wasm"
        chmod +x "$out/$name.wasm"
    fi
done
for c in "$src"/musl/*.c; do
    name=$(basename "$c" .c)
    if stale "$out/$name.musl" "$c"; then
        "${PYTHON:-python3}" -m ziglang cc -target "$host-linux-musl" -static -O2 \
            -o "$out/$name.musl" "$c"
    fi
done
# probe for the host, static (zig's musl): a program that needs nothing around it, for a
# chroot of the tests' own.
c=$src/portable/probe.c
if stale "$out/probe.static" "$c"; then
    "${PYTHON:-python3}" -m ziglang cc -target "$host-linux-musl" -static -Os \
        -o "$out/probe.static" "$c"
fi
# Readable by the unprivileged user the tests also run as.
chmod -R a+rX "$out"
