#!/usr/bin/env bash
# Build the hand-written WAT wordcount plugin into <out-dir>/wordcount-wat.wasm: the
# text is assembled, the plugin world's type (wit/) embedded, and the module made
# a component. Needs only cargo.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <out-dir>" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
cargo run --quiet --manifest-path "$root/Cargo.toml" -p wasmjobs-componentize -- \
  component "$here/wordcount.wat" --wit "$root/wit" -o "$out/wordcount-wat.wasm"
