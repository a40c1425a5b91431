"""Search-space YAML: the base run config, the searched parameters and how the study runs, validated before Ray.

::

    name: demo                      # study name (default: the file's stem); MLflow experiment and runs/ folder
    base: {model: …, loss: …, …}    # the full run config (ifdd.runconfig), what every trial starts from
    search:                         # dotted run-config path -> distribution
      model.split_ratio: {type: float, low: 0.25, high: 0.75, step: 0.125}
      model.lifting_depth: {type: int, low: 1, high: 2}
      loss.lambda_gc: {type: float, low: 0.01, high: 1.0, log: true}
      loss.gc_reduction: {type: categorical, choices: [mean, batch_sum]}
    objective: {metric: val_uar, mode: max}          # or metric: [val_uar, val_war], mode: [max, max]; max only
    budget: {num_samples: 8, max_epochs: 6, grace_period: 2, reduction_factor: 2, scheduler: asha, seed: 0}
    protocol: {selection: val, strategy: fold-wise, folds: [1, 2, 3, 4, 5]}
    resources: {workers_per_trial: 1, cpus_per_worker: null, gpus_per_worker: 0, max_concurrent_trials: null}

Every error names the key (``search.model.split_ratio.low: …``). Parameter ranges are checked against the run
config itself: a grid over each range (ends and interior points) is applied to ``base`` and validated, so a value
the model cannot build (a split ratio leaving a lifting branch empty at every depth in range) fails here, not
hours into a study. Combinations that are invalid only together are allowed and reported as infeasible trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ifdd.config import coerce_value, from_dict, to_dict
from ifdd.runconfig import RunConfig, read_yaml, run_config_from_dict, with_overrides
from orchestrator.planner import Resources

TOP_KEYS = ("name", "description", "base", "search", "objective", "budget", "protocol", "resources")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices")
METRICS = ("val_uar", "val_war")
_GRID_CAP = 4096


@dataclass(frozen=True)
class Param:
    path: str
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self):
        """The Optuna distribution (OptunaSearch samples from these directly)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this distribution (in range, on the step grid, or one of the choices)."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.type == "int" and value != int(value):
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-8
        return True

    def grid(self) -> list[Any]:
        """Representative values: every choice, every int (up to 9), or 9 points over a float range."""
        if self.type == "categorical":
            return list(self.choices)
        lo, hi = self.low, self.high
        if self.type == "int":
            step = int(self.step or 1)
            values = list(range(int(lo), int(hi) + 1, step))
            return values if len(values) <= 9 else [values[round(i * (len(values) - 1) / 8)] for i in range(9)]
        if self.step:
            n = int(math.floor((hi - lo) / self.step + 1e-9))
            values = [lo + i * self.step for i in range(n + 1)]
            return values if len(values) <= 9 else [values[round(i * n / 8)] for i in range(9)]
        if self.log:
            return [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / 8) for i in range(9)]
        return [lo + i * (hi - lo) / 8 for i in range(9)]


@dataclass(frozen=True)
class Objective:
    metric: str | tuple[str, ...] = "val_uar"
    mode: str | tuple[str, ...] = "max"

    def __post_init__(self) -> None:
        metrics, modes = self.metrics, self.modes
        if not metrics or len(metrics) > 2 or len(set(metrics)) != len(metrics):
            raise ValueError(f"metric: one metric or two different ones from {list(METRICS)}, got {list(metrics)}")
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"metric: unknown metric {m!r}; choose from {list(METRICS)}")
        if len(modes) != len(metrics):
            raise ValueError(f"mode: need one mode per metric ({len(metrics)}), got {list(modes)}")
        for m in modes:
            if m != "max":
                # UAR and WAR are maximised; the checkpoint choice, Optuna, ASHA and the champion all assume it
                raise ValueError(f"mode: {m!r} is not supported: {'/'.join(metrics)} can only be maximised "
                                 "(mode: max)")

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    @property
    def modes(self) -> tuple[str, ...]:
        return (self.mode,) if isinstance(self.mode, str) else tuple(self.mode)

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def tune_metrics(self) -> list[str]:
        """What Tune and Optuna see: the metrics of each trial's best checkpoint so far (``ckpt_val_uar`` …)."""
        return [f"ckpt_{m}" for m in self.metrics]


@dataclass(frozen=True)
class Budget:
    num_samples: int = 8
    """Trials per study (per fold for fold-wise)."""
    max_epochs: int = 10
    """Epochs of a trial that is never stopped early (overrides base.train.epochs)."""
    scheduler: Literal["asha", "none"] = "asha"
    """``asha``: stop weak trials at the rungs grace_period·rf^k (on ``epoch``); ``none``: every trial runs fully.
    Multi-objective searches always run every trial fully (ASHA ranks on one metric)."""
    grace_period: int = 1
    reduction_factor: int = 2
    seed: int = 0
    """Seeds the TPE sampler (the trials' own seeds come from base.train.seed)."""
    n_startup_trials: int = 10
    """Trials TPE samples at random before it models the results (Optuna's default, 10); the base config's trial
    counts as one. A study of fewer trials than this is a random search."""

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_epochs", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_startup_trials < 0:
            raise ValueError(f"n_startup_trials: must be >= 0, got {self.n_startup_trials}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor: must be >= 2, got {self.reduction_factor}")
        if self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period: {self.grace_period} is above max_epochs ({self.max_epochs})")
        if self.scheduler not in ("asha", "none"):
            raise ValueError(f"scheduler: must be 'asha' or 'none', got {self.scheduler!r}")


@dataclass(frozen=True)
class Protocol:
    selection: Literal["val", "test"] = "val"
    """``val``: nested (select on inner-val, test once); ``test``: paper parity, best-on-test (optimistic)."""
    strategy: Literal["fold-wise", "cross-fold"] = "fold-wise"
    folds: tuple[int, ...] = (1, 2, 3, 4, 5)

    def __post_init__(self) -> None:
        if self.selection not in ("val", "test"):
            raise ValueError(f"selection: must be 'val' or 'test', got {self.selection!r}")
        if self.strategy not in ("fold-wise", "cross-fold"):
            raise ValueError(f"strategy: must be 'fold-wise' or 'cross-fold', got {self.strategy!r}")
        if not self.folds or any(not 1 <= f <= 5 for f in self.folds) or len(set(self.folds)) != len(self.folds):
            raise ValueError(f"folds: distinct DFEW folds in 1-5, got {list(self.folds)}")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: str
    base: RunConfig
    params: tuple[Param, ...]
    objective: Objective = field(default_factory=Objective)
    budget: Budget = field(default_factory=Budget)
    protocol: Protocol = field(default_factory=Protocol)
    resources: Resources = field(default_factory=Resources)
    description: str = ""
    warnings: tuple[str, ...] = ()

    def trial_base(self) -> RunConfig:
        """``base`` with the study's epoch budget and the objective's first metric as the checkpoint selector."""
        return with_overrides(self.base, {"train.epochs": self.budget.max_epochs,
                                          "train.select_metric": self.objective.metrics[0]})

    def base_point(self) -> dict[str, Any]:
        """The base config's value of every searched path: the first trial of every study (the reference point
        the winner is compared with)."""
        base = to_dict(self.trial_base())
        point = {}
        for p in self.params:
            node: Any = base
            for part in p.path.split("."):
                node = node[part]
            point[p.path] = list(node) if isinstance(node, tuple) else node
        return point

    def with_folds(self, folds: tuple[int, ...] | None, strategy: str | None) -> SearchSpace:
        protocol = dataclasses.replace(self.protocol, **({"folds": tuple(folds)} if folds else {}),
                                       **({"strategy": strategy} if strategy else {}))
        return dataclasses.replace(self, protocol=protocol)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML; ValueError/FileNotFoundError name the file and the key."""
    path = Path(path)
    doc = read_yaml(path, "search-space")
    try:
        return parse_space(doc, default_name=path.stem, path=str(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def parse_space(doc: Any, *, default_name: str, path: str = "") -> SearchSpace:
    if not isinstance(doc, dict):
        raise ValueError("expected a mapping at the top level")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key (known: {', '.join(TOP_KEYS)})")
    if "base" not in doc:
        raise ValueError("base: missing (the run config every trial starts from)")
    base = run_config_from_dict(doc["base"], "base")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"name: letters, digits, '-', '_' and '.' only, got {name!r}")
    sections = {key: from_dict(cls, doc.get(key) or {}, key)
                for key, cls in (("objective", Objective), ("budget", Budget), ("protocol", Protocol),
                                 ("resources", Resources))}
    search = doc.get("search") or {}
    if not isinstance(search, dict):
        raise ValueError(f"search: expected a mapping of dotted config paths, got {type(search).__name__}")
    params = tuple(_parse_param(base, key, spec) for key, spec in search.items())
    space = SearchSpace(name=name, path=path, base=base, params=params, description=str(doc.get("description", "")),
                        **sections)
    try:
        space.trial_base()
    except ValueError as e:
        raise ValueError(f"budget.max_epochs: {e}") from None
    warnings = _check_grid(space)
    _check_base_in_space(space)
    return dataclasses.replace(space, warnings=warnings)


def _check_base_in_space(space: SearchSpace) -> None:
    """Every study's first trial is the base config (docs/protocol.md, "What the search bought"), so each base value
    must be a point of its parameter's distribution."""
    for path, value in space.base_point().items():
        p = next(q for q in space.params if q.path == path)
        if not p.contains(value):
            raise ValueError(f"search.{path}: the base value {value!r} is outside {_describe(p)}"
                             f"{f' (step {p.step:g})' if p.step else ''}; every study starts with the base config "
                             f"as its reference trial: widen the range or change base.{path}")


def _field_type(key: str) -> Any:
    """The run-config field type at a dotted path, or ValueError naming the path."""
    cls: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            raise ValueError(f"search.{key}: not a path in the run config")
        cls = hints[part]
        if i < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            raise ValueError(f"search.{key}: not a path in the run config")
    if dataclasses.is_dataclass(cls):
        raise ValueError(f"search.{key}: is a section, not a value")
    return cls


def _accepts(tp: Any, kind: type) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(a is kind or (kind is int and a is float) for a in args)


def _parse_param(base: RunConfig, key: str, spec: Any) -> Param:
    where = f"search.{key}"
    tp = _field_type(key)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping like {{type: float, low: 0.1, high: 1.0}}")
    unknown = sorted(set(spec) - set(PARAM_KEYS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(PARAM_KEYS)})")
    kind = spec.get("type")
    if kind not in ("float", "int", "categorical"):
        raise ValueError(f"{where}.type: must be float, int or categorical, got {kind!r}")
    if kind == "categorical":
        extra = sorted(set(spec) - {"type", "choices"})
        if extra:
            raise ValueError(f"{where}.{extra[0]}: not used by a categorical parameter (give choices)")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.choices: expected a non-empty list")
        for i, c in enumerate(choices):
            try:
                coerce_value(tp, c, f"{where}.choices[{i}]")
            except ValueError as e:
                raise ValueError(f"{e} (the type of {key})") from None
            if isinstance(c, (list, dict)):
                raise ValueError(f"{where}.choices[{i}]: lists and mappings cannot be searched")
        if len({repr(c) for c in choices}) != len(choices):
            raise ValueError(f"{where}.choices: duplicate values")
        return Param(key, "categorical", choices=tuple(choices))
    if "choices" in spec:
        raise ValueError(f"{where}.choices: only for type categorical")
    if not _accepts(tp, float if kind == "float" else int):
        raise ValueError(f"{where}.type: {kind} does not match the config field (type {_type_name(tp)})")
    num = int if kind == "int" else (int, float)
    for k in ("low", "high"):
        v = spec.get(k)
        if v is None:
            raise ValueError(f"{where}.{k}: missing")
        if isinstance(v, bool) or not isinstance(v, num) or not math.isfinite(v):
            raise ValueError(f"{where}.{k}: expected {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if low >= high:
        raise ValueError(f"{where}.low: {low} must be below high ({high})")
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log: expected true/false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"{where}.low: a log-scale range needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, num) or step <= 0:
            raise ValueError(f"{where}.step: expected a positive {'integer' if kind == 'int' else 'number'}, "
                             f"got {step!r}")
        if log:
            raise ValueError(f"{where}.step: cannot be combined with log: true")
    return Param(key, kind, float(low) if kind == "float" else low, float(high) if kind == "float" else high, log,
                 step)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_grid(space: SearchSpace) -> tuple[str, ...]:
    """Apply a grid over every range to ``base``; error on a value that is never valid, or no valid combination."""
    if not space.params:
        return ()
    grids = [[(p.path, v) for v in p.grid()] for p in space.params]
    combos: list[tuple] = list(itertools.islice(itertools.product(*grids), _GRID_CAP + 1))
    if len(combos) > _GRID_CAP:
        rng = random.Random(0)
        combos = [tuple(rng.choice(g) for g in grids) for _ in range(_GRID_CAP)]
    base = space.trial_base()
    ok_values: set[tuple[str, str]] = set()
    first_error: dict[tuple[str, str], str] = {}
    valid = 0
    for combo in combos:
        try:
            with_overrides(base, dict(combo))
        except ValueError as e:
            for pv in combo:
                first_error.setdefault((pv[0], repr(pv[1])), " ".join(str(e).split()))
            continue
        valid += 1
        ok_values.update((k, repr(v)) for k, v in combo)
    if valid == 0:
        reason = next(iter(first_error.values()))
        involved = [p for p in space.params if p.path.split(".")[-1] in reason] or list(space.params)
        keys = " × ".join(f"{p.path} in {_describe(p)}" for p in sorted(involved, key=lambda p: p.path))
        raise ValueError(f"search: no valid configuration in {keys}: {reason}")
    for p in space.params:
        for v in p.grid():
            if (p.path, repr(v)) not in ok_values:
                raise ValueError(f"search.{p.path}: value {v!r} is never valid: {first_error[(p.path, repr(v))]}")
    if valid < len(combos):
        share = 1 - valid / len(combos)
        return (f"search: {share:.0%} of a grid over the space is invalid (e.g. a split ratio too large for the "
                "lifting depth); such trials are reported as infeasible and never selected",)
    return ()


def _describe(p: Param) -> str:
    return str(list(p.choices)) if p.type == "categorical" else f"[{p.low:g}, {p.high:g}]"


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """Plain dict of the study settings (for summaries and MLflow params)."""
    return {"name": space.name, "path": space.path, "objective": to_dict(space.objective),
            "budget": to_dict(space.budget), "protocol": to_dict(space.protocol),
            "resources": to_dict(space.resources),
            "search": {p.path: {k: v for k, v in to_dict(p).items() if k != "path" and v not in (None, (), [])}
                       for p in space.params}}
