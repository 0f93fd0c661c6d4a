#!/usr/bin/env bash
# Builds a Python agent plugin into a WebAssembly component with componentize-py.
#
#   build.sh [SRC_DIR [OUT.wasm [WIT_DIR]]]
#
# SRC_DIR (default: this script's directory) holds app.py, which defines `class Agent`; the
# kit's cbench_agent.py (next to this script) is on the module path. OUT defaults to
# SRC_DIR/<dir name>.wasm; WIT_DIR to SRC_DIR/wit when present (a `cbench plugin new` plugin),
# else the repository's wit/ (the current contract).
# The toolchain is pinned: componentize-py 0.25.1 (the version this kit is tested with),
# installed once into ~/.cache/cbench/toolchains/ when missing (PyPI, no other network).
set -euo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$kit}"
src="$(cd "$src" && pwd)"
out="${2:-$src/$(basename "$src").wasm}"
if [ -n "${3:-}" ]; then wit="$3"; elif [ -d "$src/wit" ]; then wit="$src/wit"; else wit="$kit/../../wit"; fi
version="0.25.1"
cache="${CBENCH_TOOLCHAINS:-${XDG_CACHE_HOME:-$HOME/.cache}/cbench/toolchains}"
tool="$cache/componentize-py-$version"

if [ ! -f "$tool/.complete" ]; then
    echo "build.sh: installing componentize-py $version into $tool" >&2
    rm -rf "$tool"
    mkdir -p "$tool"
    # --target keeps it out of any environment; Debian's externally-managed Python still
    # wants the flag for that.
    python3 -m pip install --quiet --disable-pip-version-check --target "$tool" \
        "componentize-py==$version" >&2 \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            --target "$tool" "componentize-py==$version" >&2
    touch "$tool/.complete"
fi
[ -f "$src/app.py" ] || { echo "build.sh: $src/app.py not found (the plugin's module)" >&2; exit 2; }

mkdir -p "$(dirname "$out")"
PYTHONPATH="$tool" python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
    -d "$wit" -w agent-plugin componentize app -p "$src" -p "$kit" -o "$out"
