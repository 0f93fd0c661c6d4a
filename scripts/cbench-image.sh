#!/usr/bin/env bash
# Builds the cbench image the Kubernetes engine's pods run (deploy/kubernetes/Dockerfile),
# offline: from the debootstrapped base image (scripts/docker-base.sh), with this checkout's
# cbench binary, plugins and bundled dataset, and bubblewrap's .deb from this machine's apt.
#
#   scripts/cbench-image.sh [IMAGE] [--binary PATH] [--plugins DIR]
#       defaults: cbench:local, target/release/cbench, plugins/ (its *.wasm)
# Push it to a registry the cluster's nodes pull from, then pass it as --k8s-image.
set -euo pipefail
cd "$(dirname "$0")/.."

image="cbench:local"
binary="target/release/cbench"
plugins="plugins"
base="${CBENCH_BASE_IMAGE:-cbench-base:bookworm}"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --plugins) plugins="$2"; shift 2 ;;
        -*) echo "cbench-image: unknown option $1" >&2; exit 2 ;;
        *) image="$1"; shift ;;
    esac
done
[ -x "$binary" ] || { echo "cbench-image: $binary is not built (cargo build --release -p cbench)" >&2; exit 1; }
docker image inspect "$base" >/dev/null 2>&1 || ./scripts/docker-base.sh "$base"
ls "$plugins"/*.wasm >/dev/null 2>&1 || { echo "cbench-image: no $plugins/*.wasm (scripts/setup.sh builds them)" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/debs" "$context/plugins"
# The base is Debian bookworm; bubblewrap and the libraries it needs that minbase lacks.
( cd "$context/debs" && apt-get download bubblewrap libcap2 >/dev/null ) \
    || { echo "cbench-image: could not download bubblewrap's .deb with apt-get (a Debian bookworm host with its package mirror)" >&2; exit 1; }
cp "$binary" "$context/cbench"
cp "$plugins"/*.wasm "$context/plugins/"
cp -r dataset "$context/dataset"
docker build -q --build-arg "BASE=$base" -t "$image" -f deploy/kubernetes/Dockerfile "$context" >/dev/null
echo "cbench-image: $image ready ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MiB", $1/1048576}'))"
