"""Unsafe deserialisation: an AST scan of the whole source tree (pickle, yaml, torch.load, MLflow model loading,
resolved through the imports), every model-loading call listed with what it can execute, and what MLflow and torch
do with a pickled model or a checkpoint holding code."""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("ifdd", "orchestrator", "bench", "tests")


# Unsafe deserialisation: an AST scan of the source tree -----------------------------------------------------------
PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "ray.cloudpickle", "dill", "marshal", "joblib", "shelve"}
YAML_SAFE = {"yaml.safe_load", "yaml.safe_load_all"}

# Every call that reads a model or weights file, with what it can execute. A new call site fails
# test_every_model_loading_call_is_listed until it is added to LOADING_CALLS below, with its reason.
MODEL_LOADERS = {
    "torch.load": "tensors, numbers, strings and containers of them only: weights_only=True is required (an "
                  "unsafe_calls rule), so a file holding pickled code is refused, not run",
    "torch.serialization.load": "as torch.load",
    "torch.export.load": "unpickles the archive's weights and constants with weights_only=False: arbitrary code",
    "torch.jit.load": "TorchScript: runs the archive's code",
    "torch.hub.load": "imports and runs the repository's hubconf.py",
    "mlflow.pytorch.load_model": "MLflow 3.17's default (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true) loads a "
                                 "pickle-format model as is and unpickles a pt2 archive's weights with "
                                 "weights_only=False: a crafted model runs code. With the variable false it "
                                 "refuses both unless every pt2 record is a tensor or plain data (the project logs "
                                 "pt2 only). Either way it puts the model's logged code/ (a copy of ifdd/) first "
                                 "on sys.path",
    "mlflow.pyfunc.load_model": "as mlflow.pytorch.load_model (the pytorch flavour's loader)",
}
LOADING_CALLS = {
    ("ifdd/checkpoint.py", "torch.load"): "every checkpoint (state.pt, best.pt): weights_only=True",
    ("ifdd/weights.py", "torch.load"): "the Kinetics-400 mvit_v2_s file: weights_only=True",
    ("tests/test_pretrain.py", "torch.load"): "the pretext checkpoint the test wrote: weights_only=True",
    ("tests/test_ddp.py", "torch.load"): "the test's own state dict: weights_only=True",
    ("tests/test_model_graph.py", "torch.load"): "the spawned rank's own loss tensor: weights_only=True",
    ("tests/orchestrator/test_search.py", "mlflow.pytorch.load_model"):
        "the champion the test registered, with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
    ("tests/orchestrator/test_postgres.py", "mlflow.pytorch.load_model"):
        "the champion the test registered, with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
    ("tests/reliability/test_rel_unsafe_loading.py", "mlflow.pytorch.load_model"):
        "the test's own pickle-format tripwire model: what MLflow's default runs, and that false refuses it",
}


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the module (``import torch as t``,
    ``from torch import load``, ``from mlflow import pytorch as mp``, ``import mlflow.pytorch``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def qualified(func: ast.expr, aliases: dict[str, str]) -> str:
    """The dotted name a call's function resolves to through the imports (``pd.read_pickle`` ->
    ``pandas.read_pickle``); a local name that is no import stays as it is; '' for anything else (a call on a
    call's result, a subscript)."""
    if isinstance(func, ast.Name):
        return aliases.get(func.id, func.id)
    if isinstance(func, ast.Attribute):
        owner = qualified(func.value, aliases)
        return f"{owner}.{func.attr}" if owner else ""
    return ""


def calls(source: str) -> list[tuple[int, str, dict[str, ast.expr]]]:
    """(line, qualified name, keywords) of every call in ``source``."""
    tree = ast.parse(source)
    aliases = import_aliases(tree)
    return [(n.lineno, qualified(n.func, aliases), {k.arg: k.value for k in n.keywords})
            for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _is(value: ast.expr | None, constant) -> bool:
    return isinstance(value, ast.Constant) and value.value == constant


def unsafe_calls(source: str, name: str = "<src>") -> list[str]:
    """Calls that can run code from a file or a string, owners resolved through the imports: yaml loads other than
    safe_load, torch.load without ``weights_only=True``, pickle-family loads, pandas.read_pickle, numpy.load with
    allow_pickle=True, torch.jit/hub/export loads, eval/exec, subprocess with shell=True, a PyTorch model logged to
    MLflow in any format but pt2; and any mention of MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true."""
    found = []
    for line, q, kw in calls(source):
        where = f"{name}:{line}"
        owner, _, attr = q.rpartition(".")
        if q in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{where}: {q}()")
        elif owner == "yaml" and "load" in attr and q not in YAML_SAFE:
            found.append(f"{where}: {q}")
        elif q in ("torch.load", "torch.serialization.load") and not _is(kw.get("weights_only"), True):
            found.append(f"{where}: {q} without weights_only=True")
        elif owner in PICKLERS and (attr.startswith("load") or attr in ("Unpickler", "open")):
            found.append(f"{where}: {q}")
        elif attr == "read_pickle":
            found.append(f"{where}: {q}")
        elif q == "numpy.load" and _is(kw.get("allow_pickle"), True):
            found.append(f"{where}: numpy.load(allow_pickle=True)")
        elif q in ("torch.jit.load", "torch.hub.load", "torch.export.load"):
            found.append(f"{where}: {q}")
        elif owner == "subprocess" and _is(kw.get("shell"), True):
            found.append(f"{where}: {q}(shell=True)")
        elif q == "mlflow.pytorch.log_model" and not _is(kw.get("serialization_format"), "pt2"):
            found.append(f"{where}: {q} without serialization_format='pt2'")
    found += [f"{name}:{line}: MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true" for line in _pickle_allowed(source)]
    return found


def _truthy(v: ast.expr | None) -> bool:
    return isinstance(v, ast.Constant) and str(v.value).lower() in ("true", "1", "yes")


def _pickle_allowed(source: str) -> list[int]:
    """Lines that set MLFLOW_ALLOW_PICKLE_DESERIALIZATION to a true value: in a dict literal, a call's arguments
    (``setenv(name, "true")``) or an item assignment (``os.environ[name] = "1"``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[ast.expr | None, ast.expr | None]] = []
        if isinstance(node, ast.Dict):
            pairs = list(zip(node.keys, node.values, strict=True))
        elif isinstance(node, ast.Call):
            pairs = list(zip(node.args, node.args[1:], strict=False))
        elif isinstance(node, ast.Assign):
            pairs = [(t.slice, node.value) for t in node.targets if isinstance(t, ast.Subscript)]
        if any(_is(k, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION") and _truthy(v) for k, v in pairs):
            lines.append(node.lineno)
    return lines


def test_the_scanner_finds_every_unsafe_pattern():
    bad = ("import yaml, torch, pickle, cloudpickle, marshal, subprocess, mlflow\nimport pandas as pd\n"
           "import numpy as np\n"
           "yaml.load(s)\nyaml.full_load(s)\nyaml.unsafe_load(s)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "pickle.load(f)\npickle.loads(b)\ncloudpickle.loads(b)\nmarshal.loads(b)\npd.read_pickle(p)\n"
           "np.load(p, allow_pickle=True)\neval(s)\nexec(s)\nsubprocess.run(c, shell=True)\n"
           "mlflow.pytorch.log_model(m, name='m')\n")
    assert len(unsafe_calls(bad)) == 15
    # owners found through the imports, whatever they are called locally
    aliased = ("from torch import load\nload(p)\nimport torch as t\nt.load(p)\nfrom pickle import loads as l\nl(b)\n"
               "from yaml import unsafe_load\nunsafe_load(s)\nimport numpy\nnumpy.load(p, allow_pickle=True)\n"
               "from subprocess import run\nrun(c, shell=True)\nfrom torch import jit\njit.load(p)\n"
               "import mlflow.pytorch as mp\nmp.log_model(m, name='m', serialization_format='pickle')\n"
               "from torch.serialization import load as tl\ntl(p)\n"
               "os.environ['MLFLOW_ALLOW_PICKLE_DESERIALIZATION'] = 'true'\n")
    assert [hit.split(": ", 1)[1] for hit in unsafe_calls(aliased)] == [
        "torch.load without weights_only=True", "torch.load without weights_only=True", "pickle.loads",
        "yaml.unsafe_load", "numpy.load(allow_pickle=True)", "subprocess.run(shell=True)", "torch.jit.load",
        "mlflow.pytorch.log_model without serialization_format='pt2'",
        "torch.serialization.load without weights_only=True", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true"]
    good = ("import yaml, torch, numpy as np, subprocess, mlflow\nyaml.safe_load(s)\n"
            "torch.load(p, weights_only=True)\nnp.load(p)\nmodel.eval()\nsubprocess.run(['ls'])\n"
            "from json import loads\nloads(s)\nmlflow.pytorch.log_model(m, name='m', serialization_format='pt2')\n"
            "monkeypatch.setenv('MLFLOW_ALLOW_PICKLE_DESERIALIZATION', 'false')\n")
    assert unsafe_calls(good) == []


def _source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50
    return files


def test_no_unsafe_deserialisation_in_the_source_tree():
    found = [hit for p in _source_files() for hit in unsafe_calls(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []


def test_every_model_loading_call_is_listed_with_what_it_can_execute():
    """The inventory: each call site of a model/weights loader (owners resolved through the imports) is in
    LOADING_CALLS, and every entry there still exists. What each loader can execute is in MODEL_LOADERS."""
    sites = {(str(p.relative_to(ROOT)), q) for p in _source_files() for _, q, _ in calls(p.read_text())
             if q in MODEL_LOADERS}
    assert sites - set(LOADING_CALLS) == set(), "unlisted model-loading calls: add them to LOADING_CALLS"
    assert set(LOADING_CALLS) - sites == set(), "listed calls no longer in the tree: remove them"


def test_mlflows_default_runs_a_pickled_model_and_false_refuses_it(tmp_path, monkeypatch):
    """Why the loads above set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false: by default (MLflow 3.17) a model saved in
    the pickle format runs its code when loaded; with the variable false the same load is refused."""
    import mlflow

    marker = tmp_path / "ran"
    model = torch.nn.Sequential(Tripwire(marker))
    mlflow.pytorch.save_model(model, str(tmp_path / "pickled"), serialization_format="pickle", pip_requirements=[])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="Deserializing model using pickle is disallowed"):
        mlflow.pytorch.load_model(str(tmp_path / "pickled"))
    assert not marker.exists()
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    mlflow.pytorch.load_model(str(tmp_path / "pickled"))  # MLflow's default
    assert marker.exists()


class Tripwire(torch.nn.Module):
    """A module that runs code when unpickled (any pickled object can)."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = str(marker)

    def __setstate__(self, state):
        super().__setstate__(state)
        Path(state["marker"]).touch()


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    from ifdd.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "best.pt"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    (tmp_path / "best.pt.sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  best.pt\n")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()
