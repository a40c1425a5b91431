"""`ifdd cluster validate`: the shipped cluster files pass; each kind of mistake fails with exit 2, naming file and key.

Each case edits a copy of a shipped file (so the tests follow the files) and runs the real command in-process:
Ray's own autoscaler schema and defaults, no Ray runtime, no cloud, no network.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
AWS, GCP, ONPREM, KUBE = "aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml", "kuberay-raycluster.yaml"


@pytest.fixture(autouse=True)
def ray_token(tmp_path_factory, monkeypatch):
    """The launcher files mount ~/.ray/auth_token (made by `ray get-auth-token --generate`): give HOME one."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("0" * 64)
    monkeypatch.setenv("HOME", str(home))
    return home / ".ray" / "auth_token"


def shipped(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def run(paths, capsys) -> tuple[int, str, str]:
    rc = main(["cluster", "validate", *map(str, paths)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def fails(tmp_path, capsys, doc, key: str, name: str = "bad.yaml", message: str = "") -> str:
    """Write ``doc``, validate it, and check: exit 2, one error line naming the file and ``key``."""
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    rc, out, err = run([path], capsys)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert lines and all(line.startswith(f"error: {path}: ") for line in lines), err
    assert any(f"error: {path}: {key}" in line and message in line for line in lines), err
    return err


def test_shipped_cluster_files_validate(capsys):
    files = sorted(CLUSTER.glob("*.yaml"))
    assert {f.name for f in files} >= {AWS, GCP, ONPREM, KUBE}
    rc, out, err = run(files, capsys)
    assert rc == 0, err
    assert err == ""
    assert [line.split(":")[0] for line in out.splitlines()] == ["ok"] * len(files)


def test_validation_is_offline(capsys, monkeypatch):
    """Nothing may open a connection (no cloud API, no metadata server) while validating."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    rc, _, err = run(sorted(CLUSTER.glob("*.yaml")), capsys)
    assert rc == 0, err
    import sys

    sdks = [m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "googleapiclient", "kubernetes")]
    assert sdks == [], f"validation imported a cloud SDK: {sdks}"


def test_one_bad_file_among_good_ones_fails_the_run(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\n")
    rc, out, err = run([CLUSTER / AWS, bad], capsys)
    assert rc == 2 and f"ok: {CLUSTER / AWS}" in out and f"error: {bad}: provider" in err


# ------------------------------------------------ Ray's schema: typo key, wrong type, missing head, per file


def edit(name, fn):
    doc = copy.deepcopy(shipped(name))
    fn(doc)
    return doc


LAUNCHER_CASES = {
    "aws-typo-node-key": (AWS, lambda d: d["available_node_types"]["ray.worker.g5"].update(max_workerz=2),
                          "available_node_types.ray.worker.g5.max_workerz: unknown key"),
    "aws-typo-top-key": (AWS, lambda d: d.update(idle_timeout_minutez=5), "idle_timeout_minutez: unknown key"),
    "aws-wrong-type": (AWS, lambda d: d["available_node_types"]["ray.worker.g5"].update(max_workers="four"),
                       "available_node_types.ray.worker.g5.max_workers: expected integer"),
    "aws-missing-head-type": (AWS, lambda d: d.pop("head_node_type"), "head_node_type: missing"),
    "aws-head-type-not-defined": (AWS, lambda d: d["available_node_types"].pop("ray.head.cpu"),
                                  "head_node_type: 'ray.head.cpu' is not one of"),
    "gcp-typo-node-key": (GCP, lambda d: d["available_node_types"]["ray_worker_l4"].update(min_worker=1),
                          "available_node_types.ray_worker_l4.min_worker: unknown key"),
    "gcp-wrong-type": (GCP, lambda d: d.update(upscaling_speed="fast"), "upscaling_speed: expected number"),
    "gcp-missing-head-type": (GCP, lambda d: d.pop("head_node_type"), "head_node_type: missing"),
    "gcp-missing-resources": (GCP, lambda d: d["available_node_types"]["ray_worker_l4"].pop("resources"),
                              "available_node_types.ray_worker_l4.resources: required key missing"),
    "onprem-typo-auth-key": (ONPREM, lambda d: d["auth"].update(ssh_usr="x"), "auth.ssh_usr: unknown key"),
    "onprem-wrong-type": (ONPREM, lambda d: d.update(max_workers="two"), "max_workers: expected integer"),
    "onprem-missing-head": (ONPREM, lambda d: d["provider"].pop("head_ip"),
                            "provider.head_ip: ray autoscaler: Please supply a `head_ip`"),
    "onprem-node-types": (ONPREM, lambda d: d.update(available_node_types={"gpu": {"resources": {},
                                                                                   "node_config": {}}}),
                          "available_node_types: ray autoscaler: The field available_node_types is not supported"),
    "unknown-provider": (AWS, lambda d: d["provider"].update(type="awz"), "provider.type: must be one of"),
}


@pytest.mark.parametrize("case", LAUNCHER_CASES, ids=str)
def test_launcher_schema_errors_name_the_key(case, tmp_path, capsys):
    name, fn, expected = LAUNCHER_CASES[case]
    fails(tmp_path, capsys, edit(name, fn), expected)


KUBE_CASES = {
    "typo-key": (lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicaz=4),
                 "spec.workerGroupSpecs[0].maxReplicaz: unknown key"),
    "wrong-type": (lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="4"),
                   "spec.workerGroupSpecs[0].maxReplicas: expected an integer"),
    "missing-head": (lambda d: d["spec"].pop("headGroupSpec"), "spec.headGroupSpec: missing"),
    "bad-bounds": (lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas=5),
                   "spec.workerGroupSpecs[0]: minReplicas 5 > maxReplicas 4; KubeRay refuses the cluster"),
    "api-version": (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "apiVersion: expected ray.io/v1"),
    "kind": (lambda d: d.update(kind="RayJob"), "kind: expected RayCluster"),
    "ray-version": (lambda d: d["spec"].update(rayVersion="2.9.0"), "spec.rayVersion: must be the pinned ray"),
    "unpinned-image": (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
                       .update(image="rayproject/ray:latest"),
                       "spec.headGroupSpec.template.spec.containers[0].image: 'rayproject/ray:latest' is not pinned"),
    "untagged-image": (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                       .update(image="rayproject/ray"),
                       "spec.workerGroupSpecs[0].template.spec.containers[0].image"),
    "start-param-type": (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
                         "spec.headGroupSpec.rayStartParams.num-cpus: expected a string"),
}


@pytest.mark.parametrize("case", KUBE_CASES, ids=str)
def test_kuberay_structure_errors_name_the_key(case, tmp_path, capsys):
    fn, expected = KUBE_CASES[case]
    fails(tmp_path, capsys, edit(KUBE, fn), expected)


# ------------------------------------------------ project checks


NO_GPU = ("available_node_types: no node that can start states a GPU (a head, or a worker type with max >= 1, with "
          "resources.GPU >= 1)")


def set_meta(**kv):
    return lambda d: d["metadata"]["ifdd"].update(kv)


def head_cmd(d, i, cmd):
    d["head_start_ray_commands"][i] = cmd


PROJECT_CASES = {
    "storage-local-path": (AWS, set_meta(storage="/home/ubuntu/ray"),
                           "metadata.ifdd.storage: '/home/ubuntu/ray' is not shared storage"),
    "storage-relative": (GCP, set_meta(storage="runs/ray"), "metadata.ifdd.storage: 'runs/ray' is not shared"),
    "storage-outside-nfs": (ONPREM, set_meta(storage="/data/ray"), "metadata.ifdd.storage: '/data/ray' is not"),
    "artifacts-local": (AWS, set_meta(mlflow_artifacts="/tmp/mlartifacts"), "metadata.ifdd.mlflow_artifacts:"),
    "storage-missing": (AWS, lambda d: d["metadata"]["ifdd"].pop("storage"), "metadata.ifdd.storage: required"),
    "metadata-missing": (GCP, lambda d: d.pop("metadata"), "metadata.ifdd: missing"),
    "metadata-typo": (AWS, set_meta(tracking_url="http://x:5000"), "metadata.ifdd.tracking_url: unknown key"),
    "tracking-localhost": (AWS, set_meta(tracking_uri="http://localhost:5000"),
                           "metadata.ifdd.tracking_uri: localhost is not reachable from the worker nodes"),
    "tracking-loopback-onprem": (ONPREM, set_meta(tracking_uri="http://127.0.0.1:5000"),
                                 "metadata.ifdd.tracking_uri: 127.0.0.1 is not reachable"),
    "tracking-sqlite": (GCP, set_meta(tracking_uri="sqlite:////shared/mlflow.db"),
                        "metadata.ifdd.tracking_uri: expected http://HOST:PORT"),
    "tracking-not-head": (ONPREM, set_meta(tracking_uri="http://10.0.0.99:5000"),
                          "metadata.ifdd.tracking_uri: host 10.0.0.99 is not provider.head_ip"),
    "no-gpu-type-aws": (AWS, lambda d: d["available_node_types"]["ray.worker.g5"]["resources"].update(GPU=0),
                        NO_GPU),
    "no-gpu-type-gcp": (GCP, lambda d: d["available_node_types"].pop("ray_worker_l4")
                        and d["available_node_types"]["ray_worker_a100"].update(max_workers=0),
                        NO_GPU),
    "no-gpu-onprem": (ONPREM, lambda d: d["worker_start_ray_commands"].__setitem__(
        1, d["worker_start_ray_commands"][1].replace("--num-gpus=1", "")),
        "worker_start_ray_commands: no node that can start states a GPU (a head, or a worker type with max >= 1, "
        "with `ray start --num-gpus=N`)"),
    "dashboard-exposed": (AWS, lambda d: head_cmd(d, 3, d["head_start_ray_commands"][3].replace(
        "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")),
        "head_start_ray_commands[3]: dashboard host 0.0.0.0 exposes the Ray dashboard"),
    "dashboard-from-ray-defaults": (GCP, lambda d: d.pop("head_start_ray_commands"),
                                    "head_start_ray_commands[1]: dashboard host 0.0.0.0 exposes"),
    "mlflow-all-interfaces": (AWS, lambda d: head_cmd(d, 2, d["head_start_ray_commands"][2].replace(
        '--host "$HEAD_IP"', "--host 0.0.0.0")), "head_start_ray_commands[2]: mlflow --host 0.0.0.0"),
    "artifacts-mismatch": (ONPREM, set_meta(mlflow_artifacts="/shared/other"),
                           "head_start_ray_commands[2]: mlflow artifacts go to /shared/ifdd/mlartifacts"),
    "usage-stats-on": (ONPREM, lambda d: [d.update({k: [c.replace("RAY_USAGE_STATS_ENABLED=0", "").replace(
        "--disable-usage-stats", "") for c in d[k]]}) for k in
        ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")],
        "head_start_ray_commands: Ray usage stats not disabled"),
    "password-in-uri": (AWS, lambda d: head_cmd(d, 2, d["head_start_ray_commands"][2].replace(
        "mlflow@127.0.0.1", "mlflow:hunter2@127.0.0.1")), "head_start_ray_commands[2]: literal credential"),
    "password-env": (GCP, lambda d: d["setup_commands"].append("export PGPASSWORD=hunter2"),
                     "setup_commands[5]: literal credential"),
    "aws-key-id": (AWS, lambda d: d["provider"].update(aws_access_key_id="AKIAABCDEFGHIJKLMNOP"),
                   "provider.aws_access_key_id: literal credential"),
    "password-key": (ONPREM, set_meta(password="hunter2"), "metadata.ifdd.password: literal credential"),
}


@pytest.mark.parametrize("case", PROJECT_CASES, ids=str)
def test_project_checks_fail_with_the_key(case, tmp_path, capsys):
    name, fn, expected = PROJECT_CASES[case]
    fails(tmp_path, capsys, edit(name, fn), expected)


def test_env_var_references_are_not_credentials(tmp_path, capsys):
    doc = edit(GCP, lambda d: d["setup_commands"].append('export PGPASSWORD="$IFDD_PG_PASSWORD"'))
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(doc))
    rc, _, err = run([path], capsys)
    assert rc == 0, err


def test_single_node_may_use_local_storage_and_loopback(tmp_path, capsys):
    """No worker nodes: nothing else has to reach the storage or the tracking server."""
    def single(d):
        d["provider"]["worker_ips"] = []
        d["max_workers"] = 0
        d["metadata"]["ifdd"].update(storage="/var/ifdd/ray", tracking_uri="http://127.0.0.1:5000")
        d["head_start_ray_commands"][3] = d["head_start_ray_commands"][3].replace("--num-gpus=0", "--num-gpus=1")
    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(edit(ONPREM, single)))
    rc, _, err = run([path], capsys)
    assert rc == 0, err


KUBE_PROJECT_CASES = {
    "no-gpu-group": (lambda d: [c["resources"]["limits"].pop("nvidia.com/gpu") for c in
                                d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]],
                     "spec.workerGroupSpecs: no node that can start states a GPU (a head, or a worker type with max "
                     ">= 1, with a container limit nvidia.com/gpu >= 1"),
    "dashboard-default": (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].pop("dashboard-host"),
                          "spec.headGroupSpec.rayStartParams.dashboard-host: dashboard host not set, so 0.0.0.0 "
                          "(KubeRay's default) exposes the Ray dashboard"),
    "storage-local": (lambda d: d["metadata"]["annotations"].update({"ifdd.io/storage": "/tmp/ray"}),
                      "metadata.annotations.ifdd.io/storage: '/tmp/ray' is not shared storage"),
    "storage-missing": (lambda d: d["metadata"]["annotations"].pop("ifdd.io/storage"),
                        "metadata.annotations.ifdd.io/storage: required"),
    "tracking-localhost": (lambda d: d["metadata"]["annotations"].update(
        {"ifdd.io/tracking-uri": "http://localhost:5000"}), "metadata.annotations.ifdd.io/tracking-uri: localhost"),
    "telemetry-on": (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(env=[]),
                     "spec.workerGroupSpecs[0].template.spec.containers[0].env: telemetry not off"),
    "mlflow-all-interfaces": (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][1].update(
        args=["--host", "0.0.0.0", "--port", "5000"]),
        "spec.headGroupSpec.template.spec.containers[1].args: mlflow --host 0.0.0.0"),
    "literal-password": (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][1]["env"].__setitem__(
        1, {"name": "PGPASSWORD", "value": "hunter2"}),
        "spec.headGroupSpec.template.spec.containers[1].env[1].value: literal PGPASSWORD"),
}


@pytest.mark.parametrize("case", KUBE_PROJECT_CASES, ids=str)
def test_kuberay_project_checks_fail_with_the_key(case, tmp_path, capsys):
    fn, expected = KUBE_PROJECT_CASES[case]
    fails(tmp_path, capsys, edit(KUBE, fn), expected)


# ------------------------------------------------ files that are not cluster YAML at all


def test_missing_file(tmp_path, capsys):
    rc, _, err = run([tmp_path / "nope.yaml"], capsys)
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'nope.yaml'}: cannot read")


def test_directory_instead_of_file(tmp_path, capsys):
    rc, _, err = run([tmp_path], capsys)
    assert rc == 2 and err.startswith(f"error: {tmp_path}: cannot read")


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "blob.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    rc, _, err = run([path], capsys)
    assert rc == 2 and err.startswith(f"error: {path}: cannot read")


def test_not_yaml(tmp_path, capsys):
    fails(tmp_path, capsys, "cluster_name: [unclosed\nprovider: {type: aws\n", "not valid YAML")


def test_yaml_that_is_not_a_mapping(tmp_path, capsys):
    fails(tmp_path, capsys, "- just\n- a list\n", "expected a mapping at the top level")


def test_every_error_is_one_line(tmp_path, capsys):
    """Several problems in one file: each its own `error: FILE: key: …` line."""
    def many(d):
        d["metadata"]["ifdd"].update(storage="/tmp/ray", tracking_uri="http://localhost:5000")
        d["available_node_types"]["ray.worker.g5"]["resources"]["GPU"] = 0
    err = fails(tmp_path, capsys, edit(AWS, many), "metadata.ifdd.storage")
    assert len(err.strip().splitlines()) == 3


@pytest.mark.parametrize("name", [AWS, GCP, ONPREM], ids=str)
def test_shipped_commands_are_valid_bash(name):
    """`ray up` runs each command through bash: a quoting slip would only show on the cluster."""
    import subprocess

    doc = shipped(name)
    cmds = [c for k, v in doc.items() if k.endswith("_commands") for c in v]
    assert cmds
    for cmd in cmds:
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd}\n{r.stderr}"
