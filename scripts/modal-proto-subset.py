#!/usr/bin/env python3
"""The part of Modal's protocol cbench speaks, cut from the pinned snapshot of Modal's protos.

    scripts/modal-proto-subset.py            writes host/modal/proto/subset/*.proto
    scripts/modal-proto-subset.py --check    fails when they are not what the snapshot gives

The snapshot (host/modal/proto/snapshot/, modal-labs/modal-client at the commit in its README)
is Modal's own `api.proto` and `task_command_router.proto`. The subset keeps their package,
service and RPC names (so the gRPC paths are the real ones) and, for the RPCs in `RPCS`, every
message and enum they reach, copied byte for byte: field numbers and types are Modal's. Only
what no kept definition reaches is left out.
"""
import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "host/modal/proto/snapshot/modal_proto"
SUBSET = ROOT / "host/modal/proto/subset/modal_proto"

# The RPCs of docs/design/cloud-backends.md §E, per file.
RPCS = {
    "api.proto": [
        "AppGetOrCreate",
        "ClientHello",
        "ImageGetOrCreate",
        "ImageJoinStreaming",
        "SandboxCreate",
        "SandboxGetTaskId",
        "SandboxList",
        "SandboxTerminate",
        "SandboxWait",
        "TaskGetCommandRouterAccess",
    ],
    "task_command_router.proto": [
        "TaskExecStart",
        "TaskExecStdinWrite",
        "TaskExecStdioRead",
        "TaskExecWait",
    ],
}

TOP = re.compile(r"^(message|enum|service)\s+(\w+)\s*\{", re.M)
WORD = re.compile(r"[A-Za-z_][\w.]*")
SCALARS = {
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes", "map", "repeated", "optional",
    "oneof", "reserved", "option", "message", "enum", "returns", "stream", "rpc", "to", "max",
    "true", "false",
}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
    # Same length as the text, so offsets found in one hold in the other.
    return re.sub(r"//[^\n]*", lambda m: " " * len(m.group(0)), text)


def blocks(text):
    """Top-level definitions: name → (kind, start, end) offsets in `text` (end after `}`)."""
    bare = strip_comments(text)
    out = {}
    for m in TOP.finditer(bare):
        depth, i = 0, m.end() - 1
        while True:
            c = bare[i]
            depth += c == "{"
            depth -= c == "}"
            i += 1
            if depth == 0:
                break
        # Keep the comment lines right above a definition with it.
        start = m.start()
        while True:
            prev = text.rfind("\n", 0, max(start - 1, 0))
            line = text[prev + 1:start - 1] if start > 0 else ""
            if start > 0 and line.strip().startswith("//"):
                start = prev + 1
            else:
                break
        out[m.group(2)] = (m.group(1), start, i, m.start())
    return out


def referenced(body, names):
    found = set()
    for word in WORD.findall(strip_comments(body)):
        if word in SCALARS:
            continue
        for part in (word.split(".")[0], word.split(".")[-1], word):
            if part in names:
                found.add(part)
        if word.startswith("modal.client.") and word.split(".")[2] in names:
            found.add(word.split(".")[2])
    return found


def subset(files):
    """file name → subset text."""
    texts = {f: (SNAPSHOT / f).read_text() for f in files}
    defs = {f: blocks(t) for f, t in texts.items()}
    keep = {f: set() for f in files}
    queue = []
    for f, rpcs in RPCS.items():
        service = next(n for n, d in defs[f].items() if d[0] == "service")
        _, s, e, _ = defs[f][service]
        body = texts[f][s:e]
        for rpc in rpcs:
            m = re.search(rf"^\s*rpc\s+{rpc}\s*\((.*?)\)\s*returns\s*\((.*?)\)", body, re.M)
            if not m:
                sys.exit(f"modal-proto-subset: {f} has no rpc {rpc}")
            for t in (m.group(1), m.group(2)):
                name = t.replace("stream", "").strip().split(".")[-1]
                queue.append(name)
    while queue:
        name = queue.pop()
        owner = next((f for f in files if name in defs[f] and defs[f][name][0] != "service"), None)
        if owner is None or name in keep[owner]:
            continue  # google.protobuf.* or already kept
        keep[owner].add(name)
        _, s, e, _ = defs[owner][name]
        all_names = set().union(*(d.keys() for d in defs.values()))
        queue.extend(referenced(texts[owner][s:e], all_names) - {name})
    out = {}
    for f in files:
        text = texts[f]
        first = min(d[1] for d in defs[f].values())
        header = text[:first].rstrip() + "\n"
        parts = [
            "// Cut by scripts/modal-proto-subset.py from the snapshot beside it "
            "(host/modal/proto/snapshot/); do not edit.\n" + header
        ]
        for name, (kind, s, e, _) in sorted(defs[f].items(), key=lambda kv: kv[1][1]):
            if kind == "service":
                body = text[s:e]
                lines = body.split("\n")
                kept = [lines[0]]
                for line in lines[1:-1]:
                    m = re.match(r"\s*rpc\s+(\w+)", line)
                    if m and m.group(1) in RPCS[f]:
                        kept.append(line)
                kept.append(lines[-1])
                parts.append("\n".join(kept) + "\n")
            elif name in keep[f]:
                parts.append(text[s:e] + "\n")
        out[f] = "\n".join(parts)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    files = list(RPCS)
    made = subset(files)
    stale = []
    for f, text in made.items():
        path = SUBSET / f
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.exit(f"modal-proto-subset: {', '.join(stale)} differ from what the snapshot gives; run scripts/modal-proto-subset.py")
    kept = {f: len(re.findall(r"^(?:message|enum) ", t, re.M)) for f, t in made.items()}
    print(f"modal-proto-subset: {kept} definitions kept")


if __name__ == "__main__":
    main()
