#!/usr/bin/env bash
# Build the C wordcount plugin into <out-dir>/wordcount-c.wasm:
#   1. C bindings of the plugin world, generated from wit/ (wit-bindgen's C generator),
#   2. clang for wasm32-wasi with wasi-libc, as a reactor (no main),
#   3. the core module made a component with the preview 1 reactor adapter.
# Needs: clang, lld, wasi-libc, and clang's wasm32 runtime (Debian: clang lld
# wasi-libc libclang-rt-14-dev-wasm32; scripts/install-example-toolchains).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <out-dir>" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

sysroot=${WASI_SYSROOT:-/usr}
cargo run --quiet --manifest-path "$root/Cargo.toml" -p wasmjobs-componentize -- \
  c-bindings --wit "$root/wit" --out "$build"
clang --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor -O2 \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -I "$build" -o "$build/wordcount-c.core.wasm" \
  "$here/wordcount.c" "$build/plugin.c" "$build/plugin_component_type.o"
cargo run --quiet --manifest-path "$root/Cargo.toml" -p wasmjobs-componentize -- \
  component "$build/wordcount-c.core.wasm" -o "$out/wordcount-c.wasm"
