#!/usr/bin/env bash
# The whole test suite: formatting, lints (host natively, plugins for wasm),
# plugin unit tests, and the host's unit + integration tests (which build the
# plugins for wasm32-wasip2 themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# The local sandbox's bwrap isolation is tested for real.
if ! command -v bwrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
    else
        echo "test.sh: bubblewrap (bwrap) is required; install it (e.g. apt-get install bubblewrap)" >&2
        exit 1
    fi
fi

# Task runners shaped like the real dataset's use uv.
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install -q uv >/dev/null 2>&1 || { echo "test.sh: uv is required (pip install uv)" >&2; exit 1; }
fi

# The docker backend is tested against a real engine (DOCKER_HOST or the local socket;
# .ci/run starts a private one) with an offline base image for the bundled task.
if ! docker info >/dev/null 2>&1; then
    echo "test.sh: the docker-backend tests need a running Docker engine (start dockerd as .ci/run does, or set DOCKER_HOST)" >&2
    exit 1
fi
./scripts/docker-base.sh "${CBENCH_BASE_IMAGE:-cbench-base:bookworm}"

cargo fmt --all -- --check
cargo clippy -p cbench --all-targets -- -D warnings
cargo clippy --target wasm32-wasip2 -p mini_swe -p probe -- -D warnings
cargo test -p mini_swe
cargo test -p cbench
