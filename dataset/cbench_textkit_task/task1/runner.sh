#!/bin/bash
# Usage (in the task image): runner.sh <tests.patch> [<feature.patch>]
# Patch names are relative to /patches/, as in CooperBench's images. Resets the
# repository to its base commit, applies the feature patch (if any), then the
# hidden tests, then runs them with the standard library's unittest.
set -e

TEST_PATCH="$1"
FEATURE_PATCH="$2"

if [[ -z "$TEST_PATCH" ]]; then
    echo "Usage: docker run -v \$(pwd):/patches <image> <test_patch> [feature_patch]"
    exit 1
fi

cd /workspace/repo
git reset -q --hard HEAD
git clean -q -fdx

if [[ -n "$FEATURE_PATCH" ]]; then
    [[ -f "/patches/$FEATURE_PATCH" ]] || { echo "Feature patch not found at /patches/$FEATURE_PATCH"; exit 1; }
    if [[ -s "/patches/$FEATURE_PATCH" ]]; then
        git apply --ignore-whitespace --ignore-space-change "/patches/$FEATURE_PATCH" || git apply --3way "/patches/$FEATURE_PATCH"
    fi
fi
[[ -f "/patches/$TEST_PATCH" ]] || { echo "Test patch not found at /patches/$TEST_PATCH"; exit 1; }
git apply --ignore-whitespace --ignore-space-change "/patches/$TEST_PATCH" || git apply --3way "/patches/$TEST_PATCH"

export PYTHONDONTWRITEBYTECODE=1
python3 -m unittest discover -s tests -t . -v
