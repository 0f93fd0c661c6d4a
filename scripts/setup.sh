#!/usr/bin/env bash
# Installs what cbench needs (the wasm32-wasip2 target), builds the host and
# every plugin, and places each plugin at plugins/<name>.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time, printed at the end (a cold setup should take under 10 minutes on 2 cores).
step_times=()
setup_start=$SECONDS
timed() {
    local name="$1" start=$SECONDS
    shift
    "$@"
    step_times+=("$(printf '%6ds  %s' $((SECONDS - start)) "$name")")
}

if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 >/dev/null
fi
for tool in git python3 bash; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup: '$tool' is required but not installed" >&2; exit 1; }
done

# The local sandbox confines agents with bubblewrap; without it `cbench run` refuses to
# start (unless --isolation none).
if ! command -v bwrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } \
            || echo "setup: could not install bubblewrap; install it (bwrap) before running agents" >&2
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        sudo apt-get install -y -qq bubblewrap >/dev/null \
            || echo "setup: could not install bubblewrap; install it (bwrap) before running agents" >&2
    else
        echo "setup: bubblewrap (bwrap) is not installed; install it with your package manager before running agents" >&2
    fi
fi

# The Python and JavaScript kits need pip (componentize-py) and npm (componentize-qjs).
need_pkgs=()
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "setup: ${need_pkgs[*]} missing: install them to build the Python/JS plugins" >&2
        exit 1
    fi
fi

timed "cbench (release)" cargo build --release -p cbench
# The `plugin` profile is release without debug info (Cargo.toml).
timed "rust plugins" cargo build --profile plugin --target wasm32-wasip2 -p mini_swe -p probe
for plugin in mini_swe probe; do
    cp "target/wasm32-wasip2/plugin/$plugin.wasm" "plugins/$plugin.wasm"
done
# The same agent in Python and JavaScript, built with the kits (pinned toolchains installed
# into ~/.cache/cbench/toolchains on first use).
timed "python plugin" ./kits/python/build.sh plugins/mini_swe_py plugins/mini_swe_py.wasm >/dev/null
timed "js plugin" ./kits/js/build.sh plugins/mini_swe_js plugins/mini_swe_js.wasm >/dev/null
# The Python API: a wheel built with maturin (pinned, from PyPI, in its own venv).
maturin_venv="${HOME}/.cache/cbench/toolchains/maturin"
[ -x "$maturin_venv/bin/maturin" ] || { python3 -m venv "$maturin_venv" && "$maturin_venv/bin/pip" install -q "maturin>=1.9,<2"; }
rm -f target/wheels/cbench-*.whl
# The same profile and features as the binary above (host/feature-union): only the Python
# crate itself is compiled here.
timed "python wheel" bash -c 'cd python && "$1/bin/maturin" build --release --quiet -o ../target/wheels' _ "$maturin_venv"
# Installed where `--agent NAME` finds them from any directory (the plugin search path).
plugin_home="${XDG_DATA_HOME:-$HOME/.local/share}/cbench/plugins"
mkdir -p "$plugin_home"
cp plugins/mini_swe.wasm plugins/mini_swe_py.wasm plugins/mini_swe_js.wasm plugins/probe.wasm "$plugin_home/"
echo "setup: built target/release/cbench and plugins/{mini_swe,mini_swe_py,mini_swe_js,probe}.wasm (installed in $plugin_home)"
echo "setup: the Python API: pip install $(ls target/wheels/cbench-*.whl)"
echo "setup: where the time went" >&2
printf '  %s\n' "${step_times[@]}" >&2
printf '  %6ds  total\n' $((SECONDS - setup_start)) >&2
