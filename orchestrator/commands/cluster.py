"""`ifdd cluster validate FILE...`: offline checks of Ray cluster-launcher YAMLs and KubeRay manifests."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster files: `ifdd cluster validate cluster/*.yaml`",
                       description="Work with the cluster files in cluster/.")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND")
    v = csub.add_parser("validate", help="check cluster-launcher YAMLs and KubeRay manifests offline",
                        description="Check Ray cluster-launcher YAMLs against Ray's own autoscaler schema and "
                                    "defaults (offline: no cloud calls, no cloud SDK), then the project's settings "
                                    "(metadata.ifdd: shared storage, a tracking URI the workers reach), a GPU node "
                                    "type, the dashboard on loopback and no literal credentials. A KubeRay RayCluster "
                                    "manifest gets the same project checks. One `error: FILE: key: …` line per "
                                    "problem, exit 2.")
    v.add_argument("files", nargs="+", metavar="FILE", help="cluster YAML files")
    v.set_defaults(func=run_validate)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_validate(args: argparse.Namespace) -> int:
    from orchestrator.cluster import validate_file

    failed = 0
    for path in args.files:
        problems, summary = validate_file(path)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        if problems:
            failed += 1
        else:
            print(f"ok: {path}: {summary}")
    return 2 if failed else 0
