#!/usr/bin/env python3
"""Fails when the three roots of the build (the `cbench` binary, its tests, the Python wheel)
resolve a shared dependency with different features: Cargo would then compile that
dependency, and every host crate above it, once per root. host/feature-union/Cargo.toml
pins the union; this names what to add there when it drifts."""

import subprocess
import sys


def features(package, edges):
    out = subprocess.run(
        ["cargo", "tree", "-p", package, "-e", edges, "-f", "{p} {f}", "--prefix", "none"],
        check=True, capture_output=True, text=True,
    ).stdout
    # A package can appear twice: once for the target and once for build scripts and
    # proc-macros, which Cargo resolves apart. Compare the set of feature lists.
    resolved = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        rest = [p for p in parts[2:] if not p.startswith("(")]
        resolved.setdefault(f"{parts[0]} {parts[1]}", set()).add(rest[0] if rest else "")
    return {pkg: " | ".join(sorted(sets)) for pkg, sets in resolved.items()}


def main():
    roots = {
        "binary": features("cbench", "normal,build"),
        "tests": features("cbench", "normal,build,dev"),
        "wheel": features("cbench-python", "normal,build"),
    }
    drift = []
    names = list(roots)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for pkg in sorted(set(roots[a]) & set(roots[b])):
                if roots[a][pkg] != roots[b][pkg]:
                    drift.append(f"{pkg}: {a} [{roots[a][pkg]}] vs {b} [{roots[b][pkg]}]")
    if drift:
        print("check-feature-union: shared dependencies resolve differently per root; add the"
              " union to host/feature-union/Cargo.toml:", file=sys.stderr)
        for line in drift:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)
    print(f"check-feature-union: {len(roots['tests'])} packages, one feature set per package")


if __name__ == "__main__":
    main()
