#!/usr/bin/env bash
# Build the JavaScript wordcount plugin into <out-dir>/wordcount-js.wasm with
# componentize-js (pinned in package.json / package-lock.json, installed here by
# `npm install` on first use). Needs: node >= 20 and npm.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <out-dir>" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
cd "$here"
if [ ! -d node_modules/@bytecodealliance/componentize-js ]; then
  npm install --no-audit --no-fund --loglevel=error >&2
fi
node build.mjs "$out/wordcount-js.wasm"
