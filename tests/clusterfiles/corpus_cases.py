"""The corpus of tests/clusterfiles/corpus/expected.yaml: files no one here wrote, and edits of our own files.

A mutation takes a shipped file of ``cluster/`` and applies, in order: ``text`` (the whole file instead),
``text_replace`` (``[old, new]`` pairs on the file's text, comments kept), then on the parsed YAML ``set``
(``[path, value]``), ``delete`` (paths), ``append`` (``[path, value]``) and ``replace`` (``[path, old, new]`` inside a
string). A path is a list of keys and list indices. The shipped files are read fresh, so the mutations follow them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED = CORPUS / "expected.yaml"


def table() -> dict:
    return yaml.safe_load(EXPECTED.read_text())


def _walk(doc, path: list):
    for key in path[:-1]:
        doc = doc[key]
    return doc, path[-1]


def mutated_text(case: dict) -> str:
    """The YAML text one mutation case describes."""
    if "text" in case:
        return case["text"]
    text = (ROOT / "cluster" / case["base"]).read_text()
    for old, new in case.get("text_replace", []):
        assert old in text, f"{case['name']}: {old!r} is not in {case['base']}"
        text = text.replace(old, new, 1)
    if not any(k in case for k in ("set", "delete", "append", "replace")):
        return text
    doc = copy.deepcopy(yaml.safe_load(text))
    for path, value in case.get("set", []):
        parent, key = _walk(doc, path)
        parent[key] = value
    for path in case.get("delete", []):
        parent, key = _walk(doc, path)
        del parent[key]
    for path, value in case.get("append", []):
        parent, key = _walk(doc, path)
        parent[key].append(value)
    for path, old, new in case.get("replace", []):
        parent, key = _walk(doc, path)
        assert old in parent[key], f"{case['name']}: {old!r} is not in {path}"
        parent[key] = parent[key].replace(old, new)
    return yaml.safe_dump(doc, sort_keys=False, width=10_000)


def case_file(case: dict, tmp: Path) -> Path:
    """The file a table entry names: a corpus file as it is, or a mutation written under ``tmp``."""
    if "file" in case:
        return CORPUS / case["file"]
    path = tmp / f"{case['name']}.yaml"
    path.write_text(mutated_text(case))
    return path


def ray_says(raw) -> str:
    """Ray's own verdict, independently of the validator: what `ray up` reads before preparing (provider.type,
    cluster_name), then prepare_config + validate_config; on AWS the missing node-type resources `ray up` would
    fetch from EC2 are filled with {} first, as that call would."""
    import contextlib
    import io

    from ray.autoscaler._private.providers import _DEFAULT_CONFIGS
    from ray.autoscaler._private.util import prepare_config, validate_config

    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict) \
            or raw["provider"].get("type") not in _DEFAULT_CONFIGS or "cluster_name" not in raw:
        return "refuses"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cfg = prepare_config(copy.deepcopy(raw))
            if cfg["provider"]["type"] == "aws":
                for nt in cfg.get("available_node_types", {}).values():
                    nt.setdefault("resources", {})
            validate_config(cfg)
    except Exception:  # noqa: BLE001 - any refusal of Ray's
        return "refuses"
    return "accepts"
