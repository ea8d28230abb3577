#!/usr/bin/env bash
# Build the Python wordcount plugin into <out-dir>/wordcount-py.wasm with
# componentize-py (pinned in requirements.txt, installed on first use into a venv
# at examples/wordcount-py/.venv). Needs: python3 >= 3.10 with venv and pip.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <out-dir>" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
venv="$here/.venv"
if [ ! -x "$venv/bin/componentize-py" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
tmp="$out/.wordcount-py.wasm.tmp"
"$venv/bin/componentize-py" --wit-path "$root/wit" --world plugin \
  componentize --python-path "$here" app -o "$tmp" >&2
mv -f "$tmp" "$out/wordcount-py.wasm"
