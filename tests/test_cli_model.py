"""`ifdd model info` end to end, and the CLI's exit-2 contract."""

import json
import subprocess
import sys

import pytest

from orchestrator.cli import main


def test_model_info_xs_matches_the_reference_figures(capsys):
    assert main(["model", "info", "--preset", "xs", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # Reference model at ratio 0.5, depth 1 (docs/model.md §10.2): 37.58 M params, ≈47.9 GMACs per clip.
    assert abs(info["params"] - 37.58e6) / 37.58e6 < 0.01
    assert abs(info["macs_per_clip"] - 47.9e9) / 47.9e9 < 0.05
    assert info["input_shape"] == [3, 16, 224, 224]
    assert info["stage_shapes"]["fused"] == [8, 7, 7, 768]
    assert info["lifting_slots"] == [[4, 4]]
    # attention matmuls are counted: the backbone alone is > 40 GMACs (Conv/Linear only would give ≈ 33)
    assert info["macs_by_module"]["backbone"] > 40e9


def test_model_info_depth_and_ratio_change_the_model(capsys):
    assert main(["model", "info", "--preset", "tiny", "--split-ratio", "0.75", "--lifting-depth", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["lifting_slots"] == [[6, 2], [5, 1], [4, 1]]
    assert main(["model", "info", "--preset", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] < info["params"]


def test_model_info_table(capsys):
    assert main(["model", "info", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "MACs per clip" in out and "stage3" in out


@pytest.mark.parametrize("argv,needle", [
    (["model", "info", "--preset", "huge"], "preset: unknown preset 'huge'"),
    (["model", "info", "--split-ratio", "1.5"], "split_ratio: must be in (0, 1)"),
    (["model", "info", "--split-ratio", "0.25", "--lifting-depth", "3"], "level 3"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_console_script_help_lists_only_built_commands():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "model" in out
    bad = subprocess.run([sys.executable, "-m", "orchestrator.cli", "model", "info", "--lifting-depth", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2  # argparse type errors use the same exit code
