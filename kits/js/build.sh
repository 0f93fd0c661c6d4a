#!/usr/bin/env bash
# Builds a JavaScript agent plugin into a WebAssembly component with componentize-qjs (QuickJS).
#
#   build.sh [SRC_DIR [OUT.wasm [WIT_DIR]]]
#
# SRC_DIR (default: this script's directory) holds agent.js, which exports `agent`; the kit's
# cbench-agent.js (next to this script) is copied next to it for the build so
# `import … from "./cbench-agent.js"` resolves. OUT defaults to SRC_DIR/<dir name>.wasm;
# WIT_DIR to SRC_DIR/wit when present (a `cbench plugin new` plugin), else the repository's
# wit/ (the current contract). The toolchain is pinned: componentize-qjs 0.4.5
# (the version this kit is tested with), installed once with npm into
# ~/.cache/cbench/toolchains/ when missing. The build uses `--sync` (the host calls plugins
# without the component-model async ABI) and imports no wasi:http.
set -euo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$kit}"
src="$(cd "$src" && pwd)"
out="${2:-$src/$(basename "$src").wasm}"
if [ -n "${3:-}" ]; then wit="$3"; elif [ -d "$src/wit" ]; then wit="$src/wit"; else wit="$kit/../../wit"; fi
version="0.4.5"
cache="${CBENCH_TOOLCHAINS:-${XDG_CACHE_HOME:-$HOME/.cache}/cbench/toolchains}"
tool="$cache/componentize-qjs-$version"

command -v npm >/dev/null 2>&1 || { echo "build.sh: npm is required (apt-get install npm)" >&2; exit 2; }
if [ ! -f "$tool/.complete" ]; then
    echo "build.sh: installing componentize-qjs $version into $tool" >&2
    rm -rf "$tool"
    mkdir -p "$tool"
    (cd "$tool" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "componentize-qjs@$version" >&2)
    touch "$tool/.complete"
fi
[ -f "$src/agent.js" ] || { echo "build.sh: $src/agent.js not found (the plugin's module)" >&2; exit 2; }

# Build from a scratch copy so the kit's module sits next to the plugin's.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -R "$src"/. "$work/"
cp "$kit/cbench-agent.js" "$work/cbench-agent.js"
rm -f "$work"/*.wasm
mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
node "$tool/node_modules/componentize-qjs/cli.mjs" --sync --wit "$wit" --world agent-plugin \
    --js "$work/agent.js" --module-root "$work" -o "$out_abs"
