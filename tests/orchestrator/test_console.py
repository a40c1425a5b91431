"""The quiet console without a cluster: what reaches the terminal and what only the log file gets, the progress line
of a study from Tune's own trial objects, the epoch line's format, the parent run's description."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys

from orchestrator.console import Console, ProgressLine, epoch_line, parse_epoch_line
from orchestrator.search.progress import StudyProgress


class Terminal(io.StringIO):
    """A stream that is not a terminal (a pipe or a CI log), as the console sees one."""

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def terminal_console(tmp_path, verbose=False):
    """A console on two fresh non-terminal streams, opened inside the test itself (pytest puts its own capture back
    on sys.stdout/sys.stderr between a fixture's setup and the test)."""
    out, err = Terminal(), Terminal()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        c = Console.open("test", tmp_path / "logs", verbose=verbose)
        try:
            yield c, out, err
        finally:
            c.close()
    finally:
        sys.stdout, sys.stderr = saved


def relay(console: Console, lines: list[str], *, pid="123", name="RayTrainWorker", is_err=False) -> None:
    """A batch as Ray's driver receives it from its log monitor."""
    console._route_batch({"pid": pid, "actor_name": name, "lines": lines, "is_err": is_err, "ip": "10.0.0.1",
                          "localhost": "10.0.0.1"})


def test_worker_warnings_and_errors_reach_the_terminal_and_everything_reaches_the_log(tmp_path):
    with terminal_console(tmp_path) as (c, out, err):
        _relay_all_kinds(c)
        shown, stdout, log = err.getvalue().splitlines(), out.getvalue().splitlines(), c.path.read_text()
    assert shown == [
        "(RayTrainWorker pid=123) /x/torch/autograd/graph.py:829: UserWarning: Grad strides do not match bucket "
        "view strides.",
        "(RayTrainWorker pid=123)   return Variable._execution_engine.run_backward(",
        "(RayTrainWorker pid=123) Traceback (most recent call last):",
        "(RayTrainWorker pid=123)   File \"w.py\", line 3, in f",
        "(RayTrainWorker pid=123) ValueError: bad clip"]
    assert stdout == [f"log: {c.path} (Ray, worker and library output)"]
    for line in (EPOCH, "Setting up process group", "Requesting resources", "PreemptionWatcher",
                 "PYTHON worker processes", "ValueError: bad clip"):
        assert log.count(line) == 1, line
    assert "(TrainController pid=123) Requesting resources" in log and "(raylet) WARNING: 8 PYTHON" in log


EPOCH = epoch_line("s-fold1-abc", 1, 4, 1, {"train_loss": 1.9, "val_uar": 0.31, "lr": 1e-3, "clips_per_s": 9.0},
                   "val_uar", 0.31, 1)


def _relay_all_kinds(c: Console) -> None:
    relay(c, ["Setting up process group for: env:// [rank=0, world_size=1]", EPOCH,
              "/x/torch/autograd/graph.py:829: UserWarning: Grad strides do not match bucket view strides.",
              "  return Variable._execution_engine.run_backward(", "Moving model to device: cpu"])
    relay(c, ["Traceback (most recent call last):", '  File "w.py", line 3, in f', "ValueError: bad clip"],
          is_err=True)
    relay(c, ["Requesting resources: {'CPU': 0.9} * 1", "[2026-12-01 11:42:21,818 E 1 2] core_worker.cc:2465: Actor "
              "with class name: 'PreemptionWatcher' has constructor arguments in the object store"],
          name="TrainController")
    relay(c, ["WARNING: 8 PYTHON worker processes have been started on node: n with address: a"], pid="raylet",
          name="")


def test_verbose_shows_every_worker_line_once(tmp_path):
    with terminal_console(tmp_path, verbose=True) as (c, _, err):
        _relay_all_kinds(c)
        shown = err.getvalue()
    assert shown.count(EPOCH) == 1 and "(TrainController pid=123) Requesting resources" in shown
    assert "(raylet) WARNING: 8 PYTHON" in shown


LIBRARIES = """
import logging, sys
from pathlib import Path
import mlflow
from mlflow.utils.logging_utils import eprint
from orchestrator.console import Console
c = Console.open("test", Path(sys.argv[1]))
logging.getLogger("ray.tune.tune").info("Wrote the latest version of all result files")
logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables")
eprint("Created version '1' of model 'ifdd-synthetic'")
logging.getLogger("ray").warning("a placement group cannot be scheduled")
print("the command's own table")
with c.tune_output():
    print("Configuration for experiment")
c.close()
"""


def test_library_info_goes_to_the_file_and_warnings_to_both(tmp_path):
    """In a process of its own: the libraries' handlers hold the real terminal streams, as in `ifdd search`."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", LIBRARIES, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    log = next(tmp_path.glob("test-*.log")).read_text()
    for quiet in ("Wrote the latest version", "Creating initial MLflow", "Created version '1'",
                  "Configuration for experiment"):
        assert quiet in log and quiet not in done.stdout + done.stderr, quiet
    assert "cannot be scheduled" in done.stderr and log.count("cannot be scheduled") == 1
    assert "the command's own table" in done.stdout and "the command's own table" in log


def test_close_restores_the_streams_and_the_loggers(tmp_path):
    import sys

    before = (sys.stdout, sys.stderr, [h.level for h in logging.getLogger("ray").handlers])
    c = Console.open("test", tmp_path)
    assert sys.stdout is not before[0]
    c.close()
    assert (sys.stdout, sys.stderr, [h.level for h in logging.getLogger("ray").handlers]) == before


def test_epoch_line_reads_back():
    line = epoch_line("demo-fold2-1a2b", 3, 8, 2, {"train_loss": 1.234, "val_war": 0.4, "lr": 3e-4,
                                                   "clips_per_s": 20.0}, "val_war", 0.45, 2)
    assert parse_epoch_line(line) == {"label": "demo-fold2-1a2b", "epoch": 3, "epochs": 8, "fold": 2,
                                      "metric": "val_war", "value": 0.4, "best": 0.45, "best_epoch": 2}
    assert parse_epoch_line("Moving model to device: cpu") is None


def _trial(trial_id, status, **result):
    from ray.tune.experiment import Trial

    t = Trial("__fake", config={}, stub=True, trial_id=trial_id)
    if result:
        t.update_last_result(result)
    t.set_status(status)
    return t


def test_study_progress_counts_from_tune_trials(tmp_path):
    with terminal_console(tmp_path) as (c, _, err):
        _check_study_progress(c, err)


def _check_study_progress(c: Console, err: Terminal) -> None:
    from ray.tune.experiment import Trial

    cb = StudyProgress("s-fold1", total=5, budget=4, unit="epoch", metric="val_uar", mode="max", split="inner-val",
                       asha=True)
    cb.setup()
    trials = [_trial("t1", Trial.TERMINATED, epoch=4, ckpt_val_uar=0.41),
              _trial("t2", Trial.TERMINATED, epoch=1, ckpt_val_uar=0.20),  # ASHA stopped it at the first rung
              _trial("t3", Trial.TERMINATED, epoch=1, infeasible=1, ckpt_val_uar=0.0),
              _trial("t4", Trial.ERROR, epoch=2, ckpt_val_uar=0.55),
              _trial("t5", Trial.RUNNING, epoch=3, ckpt_val_uar=0.62)]
    cb.on_trial_result(0, trials, trials[4], {})
    state = cb.state(trials)
    assert state["counts"] | {} == {"finished": 1, "running": 1, "stopped": 1, "errored": 1, "infeasible": 1,
                                    "nonfinite": 0, "pending": 0}
    assert state["units"] == 4 + 1 + 2 + 3 and state["best"] == (0.62, "t5") and state["left"] == 1
    text = err.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"s-fold1 4/5 trials: 1 finished, 1 running, 1 stopped, 1 errored, 1 infeasible \| 10 epochs "
                        r"\| best inner-val val_uar 0.6200 \(trial t5\) \| \d+s, ETA -", text), text
    cb.on_experiment_end(trials)
    assert "progress: s-fold1 4/5 trials" in c.path.read_text()


def test_study_progress_pickles_without_its_stream(tmp_path):
    import copy

    cb = StudyProgress("s", total=1, budget=1, unit="epoch", metric="val_uar", mode="max", split="inner-val",
                       asha=False)
    with terminal_console(tmp_path):
        cb.setup()
        assert cb._line is not None
        restored = copy.deepcopy(cb)  # through __getstate__, as Tune pickles it and Tuner.restore reads it back
        assert restored._line is None
        restored.setup()  # attaches to the console of the command that resumes the study
        assert restored._line is not None
    cb.setup()  # no console (a test calling the runner directly): silent
    assert cb._line is None


def test_plain_progress_prints_major_changes_and_throttles_minor_ones(tmp_path):
    with terminal_console(tmp_path) as (c, _, err):
        line = ProgressLine(c, 3)
        line.update("a", 0, changed=True, major=True)
        line.update("b", 0, changed=True, major=False)  # an epoch, right after: held back
        line.update("c", 1, changed=True, major=True)
        line.close("c", 1)  # the same text as the last plain line: not repeated
        assert err.getvalue().splitlines() == ["a", "c"]
        assert c.path.read_text().count("progress: ") == 4


def test_study_note_says_winner_params_values_tests_and_rule(small_manifest, tmp_path, write_space):
    from orchestrator.search.results import StudyResult, TrialRow
    from orchestrator.search.space import load_space
    from orchestrator.tracking.study_runs import study_note

    space = load_space(write_space(tmp_path / "n.yaml", small_manifest))
    best = TrialRow("ab12", {"model.split_ratio": 0.5, "loss.lambda_gc": 0.123456}, "complete", 2, {"val_uar": 0.4},
                    fold_values={"1": {"val_uar": 0.4}})
    base = TrialRow("cd34", {}, "stopped", 1, {"val_uar": 0.1}, base=True, fold_values={"1": {"val_uar": 0.1}})
    res = StudyResult("n-fold1", [1], True, [best, base], best=best, winners={1: best},
                      tests={1: {"uar": 0.3333, "war": 0.25, "clips": 12}},
                      base_tests={1: {"uar": 0.2, "war": 0.125, "clips": 12}})
    note = study_note(res, space)
    for part in ("fold 1: trial `ab12`", "inner-val (val_uar 0.4000)", "**UAR 0.3333, WAR 0.2500** (12 clips)",
                 "base config UAR 0.2000, WAR 0.1250", "`loss.lambda_gc=0.1235`", "`model.split_ratio=0.5`",
                 "fold-wise nested", "1 complete, 1 stopped"):
        assert part in note, part
    parity = load_space(write_space(tmp_path / "p.yaml", small_manifest, protocol={"selection": "test"}))
    note = study_note(res, parity)  # under paper parity the chosen-on figure is a test one, and named so
    assert "chosen on test (test_uar 0.4000)" in note and "paper parity" in note and "val_uar" not in note
    res = StudyResult("n-fold1", [1], False, [], note="1 of 4 trials finished")
    assert study_note(res, space) == "**n-fold1**: no winner (1 of 4 trials finished). 0 trial(s): none."
