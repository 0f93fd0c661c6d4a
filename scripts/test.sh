#!/usr/bin/env bash
# The whole test suite: formatting, lints (host natively, plugins for wasm),
# plugin unit tests, and the host's unit + integration tests (which build the
# plugins for wasm32-wasip2 themselves, and the Python/JS plugins with the kits'
# build scripts, which install their pinned toolchains when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time, printed as a table when the script ends (CI's time budget is 25 min;
# the table says where it goes).
step_times=()
script_start=$SECONDS
timed() {
    local name="$1" start=$SECONDS
    shift
    "$@"
    step_times+=("$(printf '%6ds  %s' $((SECONDS - start)) "$name")")
}
print_step_times() {
    [ "${#step_times[@]}" -gt 0 ] || return 0
    echo "test.sh: where the time went" >&2
    printf '  %s\n' "${step_times[@]}" >&2
    printf '  %6ds  total\n' $((SECONDS - script_start)) >&2
}

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

# Debian packages the tests use for real, installed when missing (root + apt):
# Chromium renders the HTML report; docker.io and debootstrap back the docker-backend tests.
need_pkgs=()
command -v chromium >/dev/null 2>&1 || [ -n "${CBENCH_CHROMIUM:-}" ] || need_pkgs+=(chromium)
command -v script >/dev/null 2>&1 || need_pkgs+=(bsdutils)
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
fi
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
# Real tasks are graded for real (host/tests/it/real_grading.rs): chi's runner needs Go.
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
# The Python and JavaScript plugin kits are built for real (componentize-py from PyPI needs
# pip; componentize-qjs from npm needs node and npm).
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
# The Redis bus is tested against real redis-server processes the tests start on free ports.
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "test.sh: missing ${need_pkgs[*]}; install them (Debian: apt-get install ${need_pkgs[*]})" >&2
        exit 1
    fi
fi

# Daemons started below are stopped by PID when the script ends, however it ends.
stop_all() {
    print_step_times
    if [ -n "${slow_lane_pid:-}" ]; then kill "$slow_lane_pid" 2>/dev/null || true; fi
    if [ -n "${dockerd_pid:-}" ]; then stop_dockerd; fi
    if [ -n "${slurm_tmp:-}" ]; then ./scripts/slurm-local.sh stop "$slurm_tmp"; rm -rf "$slurm_tmp"; fi
}
trap stop_all EXIT
# The docker backend is tested against a real engine: the one at DOCKER_HOST or the local
# socket, else a private dockerd started here (own socket, data and exec roots) and stopped
# by PID when the tests end.
if ! docker info >/dev/null 2>&1; then
    dockerd_tmp="$(mktemp -d /tmp/cbench-dockerd.XXXXXX)"
    dockerd --host "unix://$dockerd_tmp/docker.sock" --data-root "$dockerd_tmp/data" \
        --exec-root "$dockerd_tmp/exec" --pidfile "$dockerd_tmp/dockerd.pid" \
        >"$dockerd_tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    stop_dockerd() {
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 60); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
        rm -rf "$dockerd_tmp" 2>/dev/null || true
    }
    export DOCKER_HOST="unix://$dockerd_tmp/docker.sock"
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { cat "$dockerd_tmp/dockerd.log" >&2; echo "test.sh: dockerd exited" >&2; exit 1; }
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 "$dockerd_tmp/dockerd.log" >&2; echo "test.sh: dockerd did not come up in 30 s" >&2; exit 1; }
fi
# `--engine slurm` is tested against a real one-node Slurm cluster: the one SLURM_CONF names
# when it answers, else a private one started here (scripts/slurm-local.sh: munged, slurmctld
# and slurmd on loopback, installing slurm-wlm and munge when missing) and stopped by PID.
if ! { [ -n "${SLURM_CONF:-}" ] && sinfo >/dev/null 2>&1; }; then
    slurm_tmp="$(mktemp -d /tmp/cbench-slurm.XXXXXX)"
    ./scripts/slurm-local.sh start "$slurm_tmp" >/dev/null \
        || { ./scripts/slurm-local.sh stop "$slurm_tmp"; echo "test.sh: the Slurm cluster did not start" >&2; exit 1; }
    export SLURM_CONF="$slurm_tmp/slurm.conf"
fi
step_times+=("$(printf '%6ds  %s' $((SECONDS - script_start)) "installs, dockerd and slurm")")
timed "base image" ./scripts/docker-base.sh "${CBENCH_BASE_IMAGE:-cbench-base:bookworm}"

timed "fmt" cargo fmt --all -- --check
# The host's crates import one way (no file imports in a circle, no crate above another), and
# every build root resolves the same features (else the wheel compiles the host again).
timed "import graph" python3 scripts/import-graph.py --check
timed "feature union" python3 scripts/check-feature-union.py
# The Modal protocol cbench speaks is cut from the pinned snapshot of Modal's protos.
timed "modal proto subset" python3 scripts/modal-proto-subset.py --check
# The host crates and the Python API's crate. The plugins (mini_swe, probe) are linted for
# wasm32-wasip2 by the tests' own plugin build (clippy-driver as its compiler,
# host/tests/it/support.rs): a separate `cargo clippy` pass for them cost 74 s of CI.
host_crates=(--workspace --exclude mini_swe --exclude probe)
# Libraries and binaries, then the integration tests (host/tests/it) and the binary crate's
# own tests: re-checking every library in its unit-test configuration (`--all-targets`) cost
# ~80 s of CI for a few hundred lines of unit tests.
timed "clippy host" cargo clippy "${host_crates[@]}" -- -D warnings
timed "clippy tests" cargo clippy -p cbench -p cbench-gcp --tests -- -D warnings
timed "test mini_swe" cargo test -p mini_swe
# Every host crate's unit tests and the integration tests (host/tests/it), in one build.
timed "build host tests" cargo test "${host_crates[@]}" --exclude cbench-python --no-run
# The tests that build plugins in three languages and compile them take minutes each, and
# libtest starts tests in name order: they started last and ran on alone (the suite's last
# 200 s). They get a lane of their own, started first, beside the rest: five tests at a time in
# all, since many wait on containers, processes and servers (four measured 408 s against 434 s
# with two). Measured per test (2026-12-07, `--report-time`): the slow lane's four took 364 s
# on its two threads, the rest 498 s on three, so three modules of ten-pair runs (docker
# against local, head-to-head comparisons, Modal against its mock: ~250 test-seconds) moved
# over to even them (with the last two: 379 s and 486 s).
slow_lane=(plugin_languages:: plugin_scaffold:: docker_backend:: head_to_head:: modal_backend::)
it_binary="$(cargo test -p cbench --test it --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "it" and m.get("executable"):
        print(m["executable"])')"
[ -x "$it_binary" ] || { echo "test.sh: cannot find the integration test binary" >&2; exit 1; }
run_host_tests() {
    (cd host && exec "$it_binary" --test-threads 2 "${slow_lane[@]}") &
    slow_lane_pid=$!
    local skips=() t
    for t in "${slow_lane[@]}"; do skips+=(--skip "$t"); done
    cargo test "${host_crates[@]}" --exclude cbench-python -- --test-threads 3 "${skips[@]}"
    wait "$slow_lane_pid" || { echo "test.sh: the slow lane (${slow_lane[*]}) failed" >&2; return 1; }
    slow_lane_pid=
}
timed "test host" run_host_tests

# The Python API (python/, PyO3 + maturin): built into a wheel, installed into a venv of its own,
# tested with pytest against the CLI, plugins and task image the Rust tests just built.
venv=target/pyvenv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"
    }
fi
"$venv/bin/pip" install -q "maturin>=1.9,<2" "pytest>=8"
rm -f target/wheels/cbench-*.whl
# A debug build: it reuses the host crates the tests above just compiled (same profile, and the
# same features: host/feature-union), so only the Python crate itself is compiled here.
timed "python wheel" bash -c 'cd python && "../$1/bin/maturin" build --quiet -o ../target/wheels' _ "$venv"
"$venv/bin/pip" install -q --force-reinstall --no-deps target/wheels/cbench-*.whl
timed "pytest" "$venv/bin/pytest" -q python/tests
