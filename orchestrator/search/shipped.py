"""The search spaces shipped with the package, found by name: ``--space demo`` from any folder and any install.

They are edited in ``search_spaces/`` at the top of the repository and installed as package data of
``orchestrator.search_spaces`` (pyproject.toml), so a plain ``pip install`` carries them and an editable install
reads the checkout's files. A path to a YAML file always wins over a shipped name.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "orchestrator.search_spaces"


@dataclass(frozen=True)
class ShippedSpace:
    name: str
    path: Path
    description: str


def shipped_dir() -> Path:
    """The folder holding the shipped YAMLs (inside the installed package, or the checkout's search_spaces/)."""
    return Path(str(importlib.resources.files(PACKAGE)))


def shipped_spaces() -> list[ShippedSpace]:
    """Every shipped space, by name, with the ``description`` of its YAML."""
    spaces = []
    for path in sorted(shipped_dir().glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        spaces.append(ShippedSpace(path.stem, path, str(doc.get("description", "")).strip()))
    return spaces


def resolve_space(arg: str, flag: str = "--space") -> Path:
    """``arg`` as a path when that file exists or it names a folder (``sub/x.yaml``: its reader reports a missing
    file), else the shipped space of that name (``demo`` or ``demo.yaml``).

    Raises:
        FileNotFoundError: a bare name that is neither a file here nor shipped, naming the flag and the shipped names.
    """
    path = Path(arg).expanduser()
    if path.is_file() or path.parent != Path("."):
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    for space in shipped_spaces():
        if space.name == name:
            return space.path
    names = ", ".join(s.name for s in shipped_spaces()) or "none"
    raise FileNotFoundError(f"{flag}: {arg}: no such file and no shipped search space of that name (shipped: "
                            f"{names}; `ifdd search --list` describes them)")


def load_named_space(arg: str, flag: str = "--space"):
    """``load_space`` of a path or a shipped name; a shipped space keeps its name as its ``path``, so the commands
    printed to continue it (``--resume``) work from any folder and any install."""
    import dataclasses

    from orchestrator.search.space import load_space

    path = resolve_space(arg, flag)
    space = load_space(path)
    return space if path == Path(arg).expanduser() else dataclasses.replace(space, path=path.stem)


def format_listing() -> str:
    """The text of ``ifdd search --list``."""
    spaces = shipped_spaces()
    width = max((len(s.name) for s in spaces), default=4)
    lines = ["shipped search spaces (ifdd search --space NAME; a path to your own YAML works too):"]
    lines += [f"  {s.name:<{width}}  {s.description or '(no description)'}" for s in spaces]
    lines.append(f"in {shipped_dir()} (copy one to start your own)")
    return "\n".join(lines)
