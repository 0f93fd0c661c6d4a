#!/usr/bin/env bash
# Builds this plugin into __NAME__.wasm (a wasm32-wasip2 component, no debug info).
set -euo pipefail
cd "$(dirname "$0")"
if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
fi
cargo build --release --target wasm32-wasip2
target="${CARGO_TARGET_DIR:-target}"
cp "$target/wasm32-wasip2/release/__NAME__.wasm" "__NAME__.wasm"
echo "built $(pwd)/__NAME__.wasm"
