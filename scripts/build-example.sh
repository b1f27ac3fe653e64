#!/bin/sh
# Rebuild examples/hello.wasm from examples/hello.c.
# Needs (Debian 12): apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
clang --target=wasm32-wasi --sysroot=/usr -Os -Wl,--strip-all \
    -o "$root/examples/hello.wasm" "$root/examples/hello.c"
chmod +x "$root/examples/hello.wasm"
