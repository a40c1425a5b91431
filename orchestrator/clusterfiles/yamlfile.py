"""The cluster-file reader: safe YAML, every document of a file, duplicate keys refused, the work bounded.

A file no one here wrote may hold anything, so reading it is bounded before anything walks it:
- only a regular file of at most ``MAX_BYTES`` is read (a FIFO or a device would block or never end);
- PyYAML shares one node per anchor, so composing an alias bomb is cheap, but every later walk (the credential scan,
  deepcopy, Ray's jsonschema) visits each alias again. The expanded size of each document is counted on the node
  graph first (memoised per node, so the count itself is linear) and a document past ``MAX_NODES`` is refused,
  naming the key where the expansion happens;
- a duplicate key, which YAML forbids and PyYAML (like Ray) resolves by keeping the last value, is refused with both
  line numbers. Keys brought in by a ``<<`` merge may be overridden, as YAML intends.
Only ``yaml.SafeLoader``'s constructors run: tags such as ``!!python/object`` are refused by PyYAML itself.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 2 * 1024 * 1024
"""Cluster files are tens of KiB; a KubeRay file with ConfigMaps stays far below this."""
MAX_NODES = 200_000
"""Scalars + collections after alias expansion; our largest cluster file has ~1,500."""


class ClusterFileError(ValueError):
    """A file that cannot be read as cluster YAML: one line per problem in ``lines``, each naming the file."""

    def __init__(self, path: Path, *problems: str):
        self.lines = [f"{path}: {p}" for p in problems]
        super().__init__(self.lines[0])


@dataclass
class Document:
    index: int  # 0-based position in the file
    line: int  # 1-based line where the document starts
    data: Any


def read_documents(path: str | Path) -> list[Document]:
    """Every YAML document of ``path``, each constructed only once it has passed the bounds."""
    path = Path(path)
    text = read_text(path)
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            problems = duplicate_keys(node) + expansion_problems(node)
            if problems:
                raise ClusterFileError(path, *problems)
            docs.append(Document(len(docs), node.start_mark.line + 1, loader.construct_document(node)))
    except yaml.YAMLError as e:
        raise ClusterFileError(path, f"not valid YAML ({' '.join(str(e).split())[:200]})") from None
    finally:
        loader.dispose()
    return docs


def read_text(path: Path) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ClusterFileError(path, f"cannot read ({kind})")
        if st.st_size > MAX_BYTES:
            raise ClusterFileError(path, f"{st.st_size} bytes, over the {MAX_BYTES} a cluster file may have")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # the file may grow between stat and read
    except OSError as e:
        raise ClusterFileError(path, f"cannot read ({e.strerror or type(e).__name__})") from None
    if len(raw) > MAX_BYTES:
        raise ClusterFileError(path, f"over the {MAX_BYTES} bytes a cluster file may have")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClusterFileError(path, f"cannot read (not UTF-8 text, byte {e.start})") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader; composing and constructing are driven by ``read_documents`` so that it can check in between."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _all_nodes(root: yaml.Node) -> list[yaml.Node]:
    """Every distinct node of a document (aliases shared, so this is linear in the file)."""
    out, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            out.append(node)
            stack.extend(_children(node))
    return out


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def duplicate_keys(root: yaml.Node) -> list[str]:
    """``line N: duplicate key 'k' (first at line M)`` for every mapping of the document, each node visited once."""
    problems = []
    for node in _all_nodes(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple, int] = {}
        for key, _ in node.value:
            text = _key_text(key)
            if text is None or key.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key.tag, text)
            if ident in first:
                problems.append(f"line {key.start_mark.line + 1}: duplicate key {text!r} (first at line "
                                f"{first[ident]}); YAML forbids it and Ray would keep only the last one")
            else:
                first[ident] = key.start_mark.line + 1
    return sorted(problems, key=lambda p: int(p.split()[1].rstrip(":")))


class _Recursive(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Node id -> number of nodes under it once every alias is expanded (iterative depth-first, memoised). Raises
    ``_Recursive`` for an alias inside its own anchor, which SafeLoader would build into a self-containing object."""
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            active.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in _children(node))
            continue
        if id(node) in size:
            continue
        if id(node) in active:  # reached again below itself: only a cycle does that in a depth-first walk
            raise _Recursive(node)
        active.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size


def expansion_problems(root: yaml.Node) -> list[str]:
    try:
        size = expanded_sizes(root)
    except _Recursive as r:
        return [f"line {r.node.start_mark.line + 1}: a YAML alias refers to its own anchor (a structure that "
                "contains itself); write the values out"]
    if size[id(root)] <= MAX_NODES:
        return []
    # Walk down the largest child while it alone is over the budget, stopping at nodes referenced more than once
    # (alias targets): that names the key where the aliases multiply.
    refs: dict[int, int] = {}
    for n in _all_nodes(root):
        for k in _children(n):
            refs[id(k)] = refs.get(id(k), 0) + 1
    path, node = "", root
    while True:
        over = [(k, v) for k, v in _named_children(node) if size[id(v)] > MAX_NODES and refs[id(v)] == 1]
        if not over:
            break
        name, node = max(over, key=lambda kv: size[id(kv[1])])
        path += name if name.startswith("[") or not path else f".{name}"
    return [f"line {node.start_mark.line + 1}: {path or '(top level)'}: YAML aliases expand to {size[id(node)]:,} "
            f"nodes, over the {MAX_NODES:,} a cluster file may have (an alias bomb?); write the values out"]


def _named_children(node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        return [(_key_text(k) or "?", v) for k, v in node.value]
    if isinstance(node, yaml.SequenceNode):
        return [(f"[{i}]", v) for i, v in enumerate(node.value)]
    return []


def resolve_local(path: str) -> Path:
    """A ``file_mounts`` / token path on this machine, as Ray expands it (``~`` only, like the updater)."""
    return Path(os.path.expanduser(path))
