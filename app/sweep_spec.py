"""The sweep file (which config keys to search and how, what to optimise, with which sampler and pruner) and the
names a study's trials carry, shared by the sweep (``app.sweep``) and the report (``app.sweep_report``).

It is read and checked in full before any trial runs, so a mistake is one error naming the file and the key.
The search space becomes Optuna distributions here, and the sampler and pruner become Optuna objects, so the
sweep itself (``app.sweep``) sees only Optuna's types::

    objective: {metric: val/acc, direction: maximize}
    n_trials: 8
    sampler: tpe                      # or random, grid; or {name: tpe, seed: 1, n_startup_trials: 4}
    pruner: median                    # or none; or {name: median, n_startup_trials: 2, n_warmup_steps: 0}
    space:
      model.init_args.learning_rate: {type: float, low: 1.0e-5, high: 3.0e-4, log: true}
      data.init_args.batch_size: {type: categorical, choices: [16, 32]}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import GridSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from common.errors import TbxFinetuneError

SWEEP_FILE = "sweep.yaml"
"""Written into the study's folder by the sweep: what the report needs to find the study (name, storage, objective,
space)."""
RUN_ATTR, FAILURE_ATTR = "run", "failure"
"""The trial's user attributes: its run folder, and why it failed."""
SAMPLERS = {"tpe": TPESampler, "random": RandomSampler, "grid": GridSampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}
_TOP_KEYS = ("space", "objective", "n_trials", "sampler", "pruner", "study_name")
_RANGE_KEYS = {"type", "low", "high", "log", "step"}


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file (made by ``read_sweep``). ``space`` maps a config key (as on the command line, without
    ``--``) to its values; ``sampler`` and ``pruner`` are built from the file, so their options are checked too."""

    path: Path
    space: dict[str, BaseDistribution]
    metric: str
    direction: str
    n_trials: int
    study_name: str
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner

    def corners(self) -> list[dict[str, Any]]:
        """Assignments that together try every extreme of every key (low and high, or each choice): the config
        is parsed with each before any trial runs, so a key or value the CLI refuses fails the sweep at once."""
        values = {
            key: list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]
            for key, dist in self.space.items()
        }
        count = max(len(v) for v in values.values())
        return [{key: v[min(i, len(v) - 1)] for key, v in values.items()} for i in range(count)]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's values, drawn through Optuna's public ``suggest_*`` (what a sampler and the study record)."""
        drawn = {}
        for key, dist in self.space.items():
            if isinstance(dist, CategoricalDistribution):
                drawn[key] = trial.suggest_categorical(key, dist.choices)
            else:
                suggest = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
                drawn[key] = suggest(key, dist.low, dist.high, step=dist.step, log=dist.log)
        return drawn


def read_sweep(path: str | Path, n_trials: int | None = None, study_name: str | None = None) -> SweepSpec:
    """Load and check ``path``; ``n_trials`` and ``study_name`` (from the command line) win over the file's."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TbxFinetuneError(f"--sweep {path}: {err.strerror}; pass the sweep file's path") from err
    except yaml.YAMLError as err:
        raise TbxFinetuneError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(raw, dict):
        raise TbxFinetuneError(f"{path}: expected a mapping with `space:` (and objective, sampler, pruner, n_trials)")
    if unknown := sorted(set(raw) - set(_TOP_KEYS)):
        raise TbxFinetuneError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep file has {', '.join(_TOP_KEYS)}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise TbxFinetuneError(
            f"{path}: `space:` must map config keys to ranges, e.g. "
            "`model.init_args.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}`"
        )
    metric, direction = _objective(raw.get("objective", {}), path)
    trials = n_trials if n_trials is not None else raw.get("n_trials", 10)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise TbxFinetuneError(f"{path}: n_trials={trials!r}; give a positive number of trials")
    space = {str(key).removeprefix("--"): _distribution(str(key), value, path) for key, value in space.items()}
    return SweepSpec(
        path=path,
        space=space,
        metric=metric,
        direction=direction,
        n_trials=trials,
        study_name=study_name or raw.get("study_name") or path.stem,
        sampler=_component(raw.get("sampler", "tpe"), SAMPLERS, "sampler", path, space),
        pruner=_component(raw.get("pruner", "median"), PRUNERS, "pruner", path, space),
    )


def grid(space: dict[str, BaseDistribution], path: Path) -> dict[str, list]:
    """The grid sampler's values per key: the choices, or every ``step`` from low to high."""
    values = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif dist.step is not None and not dist.log:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values[key] = [v.item() for v in np.linspace(dist.low, dist.high, count).astype(type(dist.low))]
        else:
            raise TbxFinetuneError(f"{path}: sampler grid needs `choices` or a `step` for {key}")
    return values


def ranked(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """Complete trials best first, then pruned ones (by their last reported value), then the rest by number."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(trial: FrozenTrial) -> tuple:
        value = reported_value(trial)
        order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}.get(trial.state, 2)
        return (order, sign * value if value is not None and math.isfinite(value) else math.inf, trial.number)

    return sorted(trials, key=key)


def reported_value(trial: FrozenTrial) -> float | None:
    """The trial's objective, else (pruned, failed) the last value it reported."""
    return trial.value if trial.value is not None else trial.intermediate_values.get(trial.last_step)


def _objective(raw: Any, path: Path) -> tuple[str, str]:
    if not isinstance(raw, dict) or set(raw) - {"metric", "direction"}:
        raise TbxFinetuneError(f"{path}: objective must be {{metric: val/<name>, direction: maximize|minimize}}")
    metric, direction = str(raw.get("metric", "val/acc")), str(raw.get("direction", "maximize"))
    if not metric.startswith("val/"):
        raise TbxFinetuneError(
            f"{path}: objective.metric={metric!r}: trials are compared (and pruned) on a validation metric: "
            "val/acc, val/f1, val/loss"
        )
    if direction not in ("maximize", "minimize"):
        raise TbxFinetuneError(f"{path}: objective.direction={direction!r}; use maximize or minimize")
    return metric, direction


def _distribution(key: str, raw: Any, path: Path) -> BaseDistribution:
    """One key's range as an Optuna distribution, whose own checks (low ≤ high, log > 0, …) name the key."""
    where = f"{path}: space.{key}"
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "categorical":
        choices = raw.get("choices")
        if set(raw) != {"type", "choices"} or not isinstance(choices, list) or not choices:
            raise TbxFinetuneError(f"{where}: a categorical range is {{type: categorical, choices: [a, b, …]}}")
        return CategoricalDistribution(choices)
    if kind not in ("float", "int") or not {"low", "high"} <= set(raw) or set(raw) - _RANGE_KEYS:
        raise TbxFinetuneError(
            f"{where}: expected {{type: float|int, low: …, high: …[, log: true][, step: …]}} or "
            f"{{type: categorical, choices: […]}}, got {raw!r}"
        )
    number = float if kind == "float" else int
    try:
        low, high = number(raw["low"]), number(raw["high"])
        step = None if raw.get("step") is None else number(raw["step"])
        if kind == "float":
            return FloatDistribution(low, high, log=bool(raw.get("log", False)), step=step)
        return IntDistribution(low, high, log=bool(raw.get("log", False)), step=step or 1)
    except (TypeError, ValueError) as err:
        raise TbxFinetuneError(f"{where}: {err}") from err


def _component(raw: Any, known: dict[str, Any], what: str, path: Path, space: dict[str, BaseDistribution]) -> Any:
    """The sampler or pruner ``raw`` names (``name`` or ``{name: …, options}``), built with its options: a misspelt
    one is Optuna's TypeError or ValueError, one line of ours here."""
    options = {"name": raw} if isinstance(raw, str) else raw
    if not isinstance(options, dict) or options.get("name") not in known:
        raise TbxFinetuneError(f"{path}: {what}={raw!r}; use one of {', '.join(known)} (or {{name: …, options}})")
    values = (grid(space, path),) if options["name"] == "grid" else ()  # the grid sampler is given what to try
    try:
        return known[options["name"]](*values, **{k: v for k, v in options.items() if k != "name"})
    except (TypeError, ValueError) as err:
        raise TbxFinetuneError(f"{path}: {what}: {err}") from err
