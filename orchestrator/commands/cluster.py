"""`ifdd cluster validate FILE...`: offline checks of Ray cluster-launcher YAMLs and KubeRay manifests."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster files: `ifdd cluster validate cluster/*.yaml`",
                       description="Work with the cluster files in cluster/.")
    csub = p.add_subparsers(dest="cluster_command", metavar="COMMAND")
    v = csub.add_parser("validate", help="check cluster-launcher YAMLs and KubeRay manifests offline",
                        description="Check Ray cluster-launcher YAMLs as `ray up` reads them (Ray's own defaults and "
                                    "schema, offline: no cloud calls, no cloud SDK) and what `ray up` only finds out "
                                    "on the cluster (file_mounts, worker bounds, moving image tags), then the "
                                    "project's settings (metadata.ifdd: shared storage, a tracking URI the workers "
                                    "reach), a GPU node, token authentication on every node, the dashboard on "
                                    "loopback, telemetry off and no literal credentials. A KubeRay RayCluster "
                                    "manifest (several documents allowed) gets KubeRay's CRD rules and the same "
                                    "project checks. One `error: FILE: key: …` line per problem, exit 2.")
    v.add_argument("files", nargs="+", metavar="FILE", help="cluster YAML files")
    # Nothing to resume: a stop on SIGTERM needs no resume hint (read by cli.main once it asks; see the report).
    v.set_defaults(func=run_validate, resumable=False)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_validate(args: argparse.Namespace) -> int:
    from orchestrator.clusterfiles import validate_file

    failed = 0
    for path in args.files:
        verdict = validate_file(path)
        for line in verdict.problems:
            print(f"error: {line}", file=sys.stderr)
        for line in verdict.notes:
            print(f"note: {line}")
        if verdict.problems:
            failed += 1
        else:
            print(f"ok: {path}: {verdict.summary}")
    return 2 if failed else 0
