#!/bin/bash
# Usage: run_tests.sh <repo_path> <tests.patch> [<feature.patch>]
# Applies the feature patch (if any), then the hidden tests, then runs them with
# the standard library's unittest (nothing to install).
set -e

REPO_PATH="$1"
TEST_PATCH="$2"
FEATURE_PATCH="$3"

if [[ -z "$REPO_PATH" || -z "$TEST_PATCH" ]]; then
    echo "Usage: $0 <repo_path> <tests.patch> [<feature.patch>]"
    exit 1
fi
[[ -d "$REPO_PATH" ]] || { echo "Repository not found at $REPO_PATH"; exit 1; }
[[ -f "$TEST_PATCH" ]] || { echo "Test patch not found at $TEST_PATCH"; exit 1; }
[[ -z "$FEATURE_PATCH" || -f "$FEATURE_PATCH" ]] || { echo "Feature patch not found at $FEATURE_PATCH"; exit 1; }

TEST_PATCH="$(realpath "$TEST_PATCH")"
[[ -n "$FEATURE_PATCH" ]] && FEATURE_PATCH="$(realpath "$FEATURE_PATCH")"
cd "$REPO_PATH"

if [[ -n "$FEATURE_PATCH" && -s "$FEATURE_PATCH" ]]; then
    git apply --ignore-whitespace --ignore-space-change "$FEATURE_PATCH" || git apply --3way "$FEATURE_PATCH"
fi
git apply --ignore-whitespace --ignore-space-change "$TEST_PATCH" || git apply --3way "$TEST_PATCH"

export PYTHONDONTWRITEBYTECODE=1
python3 -m unittest discover -s tests -t . -v
