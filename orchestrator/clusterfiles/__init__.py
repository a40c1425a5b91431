"""Offline validation of cluster files: Ray cluster-launcher YAMLs (launcher.py) and KubeRay manifests (kuberay.py).

A file is read by yamlfile.py (bounded, duplicate keys refused, every document). One document without
``apiVersion``/``kind`` is a launcher YAML, as `ray up` reads it. Otherwise every document is a Kubernetes object:
each ``RayCluster`` is checked, other kinds (a Secret, a ConfigMap beside it, as kubectl users write them) are only
scanned for literal credentials and named in a note; a file without a RayCluster is refused at once. Each problem is
one line ``FILE: key.path: what is wrong`` (``FILE: document N: …`` in a file of several documents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.clusterfiles.checks import credential_scan
from orchestrator.clusterfiles.yamlfile import ClusterFileError, Document, read_documents


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    summary: str = ""
    notes: list[str] = field(default_factory=list)


def validate_file(path: str | Path) -> Verdict:
    """The verdict on one cluster file: problems (empty when valid), a one-line summary, and notes."""
    path = Path(path)
    try:
        docs = [d for d in read_documents(path) if d.data is not None]
    except ClusterFileError as e:
        return Verdict(e.lines)
    if not docs:
        return Verdict([f"{path}: empty (no YAML document)"])
    odd = [d for d in docs if not isinstance(d.data, dict)]
    if odd:
        where = "" if len(docs) == 1 else f"document {odd[0].index + 1} (line {odd[0].line}): "
        return Verdict([f"{path}: {where}expected a mapping at the top level, got {type(odd[0].data).__name__}"])
    if len(docs) == 1 and not ({"apiVersion", "kind"} & set(docs[0].data)):
        return launcher_verdict(path, docs[0].data)
    return manifest_verdict(path, docs)


def launcher_verdict(path: Path, doc: dict) -> Verdict:
    from orchestrator.clusterfiles.launcher import validate_launcher

    problems, summary, notes = validate_launcher(doc)
    return Verdict([f"{path}: {p}" for p in problems], summary, [f"{path}: note from ray: {n}" for n in notes])


def manifest_verdict(path: Path, docs: list[Document]) -> Verdict:
    from orchestrator.clusterfiles.kuberay import validate_raycluster

    def label(d: Document) -> str:
        return "" if len(docs) == 1 else f"document {d.index + 1}: "

    launcher_like = [d for d in docs if not ({"apiVersion", "kind"} & set(d.data))]
    if launcher_like:
        d = launcher_like[0]
        return Verdict([f"{path}: document {d.index + 1} (line {d.line}): no apiVersion/kind; a launcher YAML must "
                        "be the only document of its file (`ray up` reads one), a manifest names its kind"])
    clusters = [d for d in docs if d.data.get("kind") == "RayCluster"]
    if not clusters:
        kinds = ", ".join(repr(d.data.get("kind")) for d in docs)
        return Verdict([f"{path}: kind: expected RayCluster, got {kinds} (ifdd cluster validate checks launcher "
                        "YAMLs and KubeRay RayCluster manifests)"])
    verdict = Verdict()
    summaries = []
    for d in docs:
        if d in clusters:
            problems, summary = validate_raycluster(d.data)
            summaries.append(summary)
        else:
            problems = credential_scan(d.data, fix="create the Secret from a file or the command line, "
                                                   "never in a file that is kept")
            name = (d.data.get("metadata") or {}).get("name") if isinstance(d.data.get("metadata"), dict) else None
            verdict.notes.append(f"{path}: {label(d)}{d.data.get('kind')} {name or ''}".rstrip()
                                 + " not checked (not a RayCluster); scanned for literal credentials only")
        verdict.problems += [f"{path}: {label(d)}{p}" for p in problems]
    verdict.summary = "; ".join(summaries)
    return verdict
