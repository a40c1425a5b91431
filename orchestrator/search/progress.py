"""Live progress of a study (a Tune callback in the driver) and of an ``ifdd train`` run, as one line each::

    demo-fold1 ██████ 1/2 trials: 1 finished, 1 running, 0 stopped, 0 errored | 9 epochs | best inner-val val_uar
    0.4120 (trial d8c94f4a) | 3m05s, ETA ≤2m40s

Counts come from Tune's trial list, so a resumed study starts from what it already has. The ETA assumes every
unfinished trial runs its full budget (``≤`` when ASHA may stop some early) at the rate measured since this command
started. The statuses here are the live view; the study's table afterwards is the authoritative one
(orchestrator/search/selection.py), and tests/orchestrator/test_console.py checks that the two agree.
"""

from __future__ import annotations

import time
from typing import Any

import ray.tune

from orchestrator import console as console_mod
from orchestrator.console import ProgressLine, duration


class StudyProgress(ray.tune.Callback):
    """The study's progress line. Holds no stream: Tune pickles callbacks into the experiment and a restored study
    unpickles them, so the line attaches to the console of whichever command runs the study (none: silent)."""

    def __init__(self, study: str, *, total: int, budget: int, unit: str, metric: str, mode: str, split: str,
                 asha: bool):
        self.study, self.total, self.budget, self.unit = study, total, budget, unit
        self.metric, self.mode, self.split, self.asha = metric, mode, split, asha
        self._line: ProgressLine | None = None
        self._start, self._units0, self._last = 0.0, None, ()

    def __getstate__(self):
        return {**self.__dict__, "_line": None}

    def setup(self, **info):
        console = console_mod.current()
        self._start, self._units0, self._last = time.monotonic(), None, ()
        self._line = ProgressLine(console, self.total) if console is not None else None

    # Tune's hooks: every one redraws from the full trial list ----------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        self._draw(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._draw(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._draw(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._draw(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._draw(trials)

    def on_experiment_end(self, trials, **info):
        if self._line is not None:
            state = self.state(trials)
            self._line.close(self.text(state), state["done"])
            self._line = None

    # what the line says -----------------------------------------------------------------------------------------
    def status(self, trial) -> str:
        """finished | stopped | infeasible | nonfinite | errored | running | pending."""
        result = trial.last_result or {}
        if trial.status == "ERROR":
            return "errored"
        if trial.status != "TERMINATED":
            return "running" if trial.status in ("RUNNING", "PAUSED") else "pending"
        if result.get("infeasible"):
            return "infeasible"
        if result.get("stop_reason"):
            return "nonfinite"
        return "finished" if _units(result, self.unit) >= self.budget else "stopped"

    def state(self, trials) -> dict[str, Any]:
        counts = dict.fromkeys(("finished", "running", "stopped", "errored", "infeasible", "nonfinite", "pending"), 0)
        units, best = 0, None
        for t in trials:
            s = self.status(t)
            counts[s] += 1
            result = t.last_result or {}
            if result.get("infeasible"):
                continue
            units += _units(result, self.unit)
            value = result.get(f"ckpt_{self.metric}")
            if value is not None and (best is None or (value > best[0] if self.mode == "max" else value < best[0])):
                best = (float(value), t.trial_id)
        counts["pending"] += max(0, self.total - len(trials))
        done = sum(counts[k] for k in ("finished", "stopped", "errored", "infeasible", "nonfinite"))
        left = sum(max(0, self.budget - _units(t.last_result or {}, self.unit)) for t in trials
                   if self.status(t) in ("running", "pending")) + self.budget * max(0, self.total - len(trials))
        return {"counts": counts, "done": done, "units": units, "best": best, "left": left}

    def text(self, state: dict[str, Any]) -> str:
        c = state["counts"]
        extra = "".join(f", {c[k]} {k}" for k in ("infeasible", "nonfinite") if c[k])
        best = (f"best {self.split} {self.metric} {state['best'][0]:.4f} (trial {state['best'][1]})"
                if state["best"] else f"best {self.split} {self.metric} -")
        elapsed = time.monotonic() - self._start
        if self._units0 is None:
            self._units0 = state["units"]
        ran = state["units"] - self._units0
        if state["left"] == 0:
            eta = "done"
        elif ran > 0:
            eta = f"ETA {'≤' if self.asha else ''}{duration(state['left'] * elapsed / ran)}"
        else:
            eta = "ETA -"
        return (f"{self.study} {state['done']}/{self.total} trials: {c['finished']} finished, {c['running']} "
                f"running, {c['stopped']} stopped, {c['errored']} errored{extra} | "
                f"{_plural(state['units'], self.unit)} | {best} | {duration(elapsed)}, {eta}")

    def _draw(self, trials) -> None:
        if self._line is None:
            return
        state = self.state(trials)
        if state["done"] + state["counts"]["running"] == 0:  # nothing started yet
            return
        key = (tuple(sorted(state["counts"].items())), state["best"], state["units"])
        self._line.update(self.text(state), state["done"], changed=key != self._last,
                          major=key[:2] != self._last[:2])
        self._last = key


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _units(result: dict[str, Any], unit: str) -> int:
    return int(result.get("folds_done" if unit == "fold" else "epoch", 0) or 0)


def study_progress(space, study: str, folds: list[int]) -> StudyProgress:
    """The progress callback of one study of ``space`` (fold-wise: epochs; cross-fold: a trial's folds)."""
    cross = space.protocol.strategy == "cross-fold"
    asha = not cross and bool(space.params) and not space.objective.multi and space.budget.scheduler == "asha"
    return StudyProgress(study, total=space.budget.num_samples, budget=len(folds) if cross else space.budget.max_epochs,
                         unit="fold" if cross else "epoch", metric=space.objective.metrics[0],
                         mode=space.objective.modes[0], split="test" if space.protocol.selection == "test" else
                         "inner-val", asha=asha)


class TrainProgress:
    """The progress line of ``ifdd train``: read from the epoch lines its rank 0 prints (orchestrator/console.py
    ``epoch_line``), which reach the driver through Ray's log relay."""

    def __init__(self, console, name: str, epochs: int, split: str):
        self.console, self.name, self.epochs, self.split = console, name, epochs, split
        self._start = time.monotonic()
        self._first: tuple[float, int] | None = None
        self._epoch, self._best = 0, None
        self._line = ProgressLine(console, epochs)
        self._line.update(self.text(), 0, changed=True, major=True)  # the run has started: say so before epoch 1
        console.line_listeners.append(self.on_line)

    def on_line(self, line: str) -> None:
        parsed = console_mod.parse_epoch_line(line)
        if not parsed or parsed["label"] != self.name:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (now, parsed["epoch"])
        self._epoch, self._best = parsed["epoch"], (parsed["best"], parsed["best_epoch"], parsed["metric"])
        self._line.update(self.text(now), self._epoch, changed=True, major=True)

    def text(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        elapsed = now - self._start
        best = f"best {self.split} {self._best[2]} {self._best[0]:.4f} @ epoch {self._best[1]}" if self._best else \
            f"best {self.split} -"
        left = self.epochs - self._epoch
        if left <= 0:
            eta = "done"
        elif self._first and self._epoch > self._first[1]:
            eta = f"ETA {duration(left * (now - self._first[0]) / (self._epoch - self._first[1]))}"
        elif self._epoch:
            eta = f"ETA {duration(left * elapsed / self._epoch)}"
        else:
            eta = "ETA -"
        return f"{self.name} epoch {self._epoch}/{self.epochs} | {best} | {duration(elapsed)}, {eta}"

    def close(self) -> None:
        if self.on_line in self.console.line_listeners:
            self.console.line_listeners.remove(self.on_line)
        self._line.close(self.text(), self._epoch)
