#!/usr/bin/env python3
"""The host's imports as a graph of files: prints crate-level and file-level edges, and with
--check fails on an import circle between files or between crates (Cargo refuses a circle of
crate dependencies, so a crate can only import crates below it).

A file imports another when it names an item through `crate::`, `super::`, a workspace crate
(`cbench_core::…`) or one of its own submodules (`child::…` in a mod.rs/lib.rs). Paths resolve
to the deepest file that exists (`crate::a::b::C` is `a/b.rs` or `a/b/mod.rs`, else `a.rs`).
A file naming its own ancestor module (`super::Error`) is not counted: the parent declares the
child, so that is the module tree, not a flow between concerns.
"""

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "host"


def crates():
    """Each host crate: name → its src dir."""
    found = {}
    for cargo in [ROOT / "Cargo.toml"] + sorted(ROOT.glob("*/Cargo.toml")):
        text = cargo.read_text()
        m = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M)
        if m and (cargo.parent / "src").is_dir():
            found[m.group(1).replace("-", "_")] = cargo.parent / "src"
    if not found and (ROOT / "src").is_dir():
        found["cbench"] = ROOT / "src"
    return found


ALIAS_RE = re.compile(r"^(?:pub )?use (cbench_[a-z_]+)((?:::[a-z_]+)*)(?: as ([a-z_]+))?;", re.M)
GROUP_ALIAS_RE = re.compile(r"^(?:pub )?use (cbench_[a-z_]+)((?:::[a-z_]+)*)::\{([^}]*)\};", re.M)


def root_aliases(src):
    """Names a crate root brings in from other crates: alias → (crate, module path)."""
    lib = src / "lib.rs"
    if not lib.exists():
        return {}
    text = lib.read_text()
    out = {}
    for m in ALIAS_RE.finditer(text):
        path = [p for p in m.group(2).split("::") if p]
        name = m.group(3) or (path[-1] if path else m.group(1))
        out[name] = (m.group(1), path)
    for m in GROUP_ALIAS_RE.finditer(text):
        base = [p for p in m.group(2).split("::") if p]
        for item in re.split(r"[,\s]+", m.group(3)):
            if item:
                out[item] = (m.group(1), base + [item])
    return out


def module_files(src):
    """Module path (tuple) → file, for every .rs file under src."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def resolve(mods, path):
    """The deepest existing module file along `path`."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return mods[tuple(path[:n])]
    return None


PATH_RE = re.compile(r"\b((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+((?:crate|super|[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)::\{([^;]*)\};", re.S)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def file_edges(all_crates):
    """(crate, file) → set of (crate, file) it imports."""
    tables = {name: module_files(src) for name, src in all_crates.items()}
    edges = {}
    for name, src in all_crates.items():
        mods = tables[name]
        aliases = root_aliases(src)
        ancestors_of = {
            f: {mods[modpath[:n]] for n in range(len(modpath)) if modpath[:n] in mods}
            for modpath, f in mods.items()
        }
        for modpath, f in mods.items():
            here = list(modpath)
            is_dir_mod = f.name in ("mod.rs", "lib.rs", "main.rs")
            # `super` from a.rs or a/mod.rs is the parent of module `a`.
            base = here
            text = strip_comments(f.read_text())
            paths = [m.group(1) for m in PATH_RE.finditer(text)]
            for m in USE_GROUP_RE.finditer(text):
                for inner in re.split(r"[,\s]+", m.group(2)):
                    inner = inner.strip("{} ")
                    if inner and inner != "self" and re.match(r"[a-z_]", inner):
                        paths.append(m.group(1) + "::" + inner.split("::{")[0])
            targets = set()
            for p in paths:
                parts = p.split("::")
                head = parts[0]
                if head == "crate" and len(parts) > 1 and parts[1] in aliases and tuple(parts[1:2]) not in mods:
                    tcrate, prefix = aliases[parts[1]]
                    if tcrate not in tables:
                        continue
                    target = resolve(tables[tcrate], prefix + parts[2:])
                elif head == "crate":
                    target = resolve(mods, parts[1:])
                    tcrate = name
                elif head == "super":
                    cur = list(base)
                    while parts and parts[0] == "super":
                        cur = cur[:-1]
                        parts = parts[1:]
                    target = resolve(mods, cur + parts)
                    tcrate = name
                elif head == "self":
                    target = resolve(mods, here + parts[1:])
                    tcrate = name
                elif head == name and head == "cbench" and len(parts) > 1 and parts[1] in aliases:
                    # The binary names its own library (`cbench::compare`): follow the re-export.
                    tcrate, prefix = aliases[parts[1]]
                    if tcrate not in tables:
                        continue
                    target = resolve(tables[tcrate], prefix + parts[2:])
                elif head in tables and head != name:
                    target = resolve(tables[head], parts[1:])
                    tcrate = head
                elif is_dir_mod and tuple(here + [head]) in mods:
                    target = resolve(mods, here + parts)
                    tcrate = name
                else:
                    continue
                if tcrate == name and target in ancestors_of[f]:
                    continue
                if target is not None and (tcrate, target) != (name, f):
                    targets.add((tcrate, target))
            edges[(name, f)] = targets
    return edges


def sccs(nodes, edges):
    """Tarjan's strongly connected components of size > 1."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on a circle")
    ap.add_argument("--edges", action="store_true", help="print every file-level edge")
    args = ap.parse_args()
    all_crates = crates()
    edges = file_edges(all_crates)

    def label(node):
        c, f = node
        return f"{c}:{os.path.relpath(f, all_crates[c])}"

    crate_edges = {}
    for (c, _), targets in edges.items():
        for (t, _) in targets:
            if t != c:
                crate_edges.setdefault(c, set()).add(t)
    print("crates (each imports):")
    for c in all_crates:
        print(f"  {c} -> {', '.join(sorted(crate_edges.get(c, ()))) or '(nothing)'}")
    if args.edges:
        for node, targets in sorted(edges.items(), key=lambda kv: label(kv[0])):
            for t in sorted(targets, key=label):
                print(f"  {label(node)} -> {label(t)}")
    circles = sccs(list(edges), edges)
    crate_circles = sccs(list(all_crates), crate_edges)
    for comp in circles:
        print("file circle: " + " ⇄ ".join(sorted(label(n) for n in comp)))
    for comp in crate_circles:
        print("crate circle: " + " ⇄ ".join(sorted(comp)))
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(edges)} files, {n_edges} imports, {len(circles)} file circles, {len(crate_circles)} crate circles")
    if args.check and (circles or crate_circles):
        sys.exit(1)


if __name__ == "__main__":
    main()
