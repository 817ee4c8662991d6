"""The report's sweep section: ``python -m app.cli report runs/<study> -o DIR`` on a study's folder.

A study's folder (the one ``app.sweep`` writes ``sweep.yaml`` into) stands for its trials: the report reads the
study back through Optuna's storage and adds, above the runs compared as usual, the trials ranked by the
objective, the objective against each searched parameter, Optuna's parameter importances (its default evaluator)
and the best trial's config ready to re-run with ``fit``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from app.report import EVENTS_GLOB
from app.report_html import _e, _figure, _images, _num, _save, _table
from app.sweep_spec import FAILURE_ATTR, RUN_ATTR, SWEEP_FILE, ranked, reported_value
from common.errors import TbxFinetuneError

BEST_CONFIG = "best_config.yaml"


@dataclass
class StudyRecord:
    """A study read back: its folder, what ``sweep.yaml`` says of it, and its trials from the storage."""

    folder: Path
    name: str
    metric: str
    direction: str
    space: dict[str, Any]
    trials: list[FrozenTrial]
    study: optuna.Study

    @property
    def runs(self) -> list[Path]:
        """The trials' run folders that hold events, best trial first (what the report compares)."""
        paths = [Path(t.user_attrs[RUN_ATTR]) for t in ranked(self.trials, self.direction) if RUN_ATTR in t.user_attrs]
        return [p for p in paths if any(p.glob(EVENTS_GLOB))]


def is_study(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def read_study(folder: str | Path, storage: str | None = None) -> StudyRecord:
    """``folder/sweep.yaml`` names the study and its storage (``optuna.db`` beside it, else a URL whose password
    was masked: pass ``storage`` then)."""
    folder = Path(folder)
    sweep = yaml.safe_load((folder / SWEEP_FILE).read_text(encoding="utf-8"))
    stored = sweep["storage"]
    url = storage or (f"sqlite:///{folder / stored}" if "://" not in stored else stored)
    if "***" in url:
        raise TbxFinetuneError(f"{folder}: the study lives in {stored}; pass its URL with --storage")
    try:
        study = optuna.load_study(study_name=sweep["study_name"], storage=url)
    except Exception as err:  # no such study in that storage, a server that refuses
        raise TbxFinetuneError(f"{folder}: cannot read study {sweep['study_name']!r} from {stored}: {err}") from err
    return StudyRecord(
        folder=folder,
        name=sweep["study_name"],
        metric=sweep["objective"]["metric"],
        direction=sweep["objective"]["direction"],
        space=sweep["space"],
        trials=study.get_trials(),
        study=study,
    )


def sweep_section(record: StudyRecord, output: Path) -> str:
    """The study's part of the page; writes its charts and ``best_config.yaml`` into ``output``."""
    counts = {s: sum(t.state == s for t in record.trials) for s in TrialState}
    summary = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    parts = [
        f"<h2>Sweep {_e(record.name)}: {_e(record.metric)} ({_e(record.direction)})</h2>",
        f'<p class="muted">{len(record.trials)} trials: {_e(summary)}. Folder: '
        f'<span class="tag">{_e(record.folder)}</span>.</p>',
        _best(record, output),
        "<h3>Trials, best first</h3>",
        _trials_table(record),
        _importances(record),
        "<h3>The objective against each searched parameter</h3>",
        _images(_parameter_charts(record, output)),
    ]
    return "\n".join(p for p in parts if p)


def _trials_table(record: StudyRecord) -> str:
    header = ["trial", "state", record.metric, *(k.rsplit(".", 1)[-1] for k in record.space), "run", "note"]
    rows = [
        [
            _num(trial.number),
            _e(trial.state.name.lower()),
            _num(trial.value),
            *(_num(trial.params.get(key)) for key in record.space),
            f'<span class="tag">{_e(Path(trial.user_attrs.get(RUN_ATTR, "")).name or None)}</span>',
            _e(_note(trial, record.metric)),
        ]
        for trial in ranked(record.trials, record.direction)
    ]
    return _table(header, rows)


def _note(trial: FrozenTrial, metric: str) -> str:
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return f"pruned after validation {max(trial.intermediate_values)} ({metric} {reported_value(trial):.4g})"
    return str(trial.user_attrs.get(FAILURE_ATTR, ""))


def _importances(record: StudyRecord) -> str:
    """Optuna's default importance evaluator over the complete trials (it needs two, with values that differ)."""
    try:
        with warnings.catch_warnings(record=True) as caught:  # "too few trials: importances will be equal"
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(record.study)
    except (RuntimeError, ValueError) as err:
        return f'<h3>Parameter importances</h3>\n<p class="muted">Not computed: {_e(err)}</p>'
    if not importances:
        return ""
    caveat = "".join(f'<div class="warning">Optuna: {_e(w.message)}</div>' for w in caught)
    rows = [[f'<span class="tag">{_e(k)}</span>', _num(v)] for k, v in importances.items()]
    complete = sum(t.state == TrialState.COMPLETE for t in record.trials)
    return (
        "<h3>Parameter importances</h3>\n"
        f'<p class="muted">Optuna\'s default evaluator over {complete}'
        " complete trials: the share of the objective's variation each searched key explains.</p>\n"
        + caveat
        + _table(["parameter", "importance"], rows)
    )


def _best(record: StudyRecord, output: Path) -> str:
    """The best trial's ``config.yaml`` as a fit config of its own (its run folder named ``<study>_best``)."""
    complete = [t for t in record.trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return '<p class="muted">No complete trial yet.</p>'
    best = ranked(complete, record.direction)[0]
    source = Path(best.user_attrs.get(RUN_ATTR, "")) / "config.yaml"
    values = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.params.items())
    out = f"<h3>Best trial: {best.number}, {_e(record.metric)} {best.value:.4g}</h3>\n<p>{_e(values)}</p>"
    if not source.is_file():
        return out + f'<p class="muted">Its config.yaml ({_e(source)}) is missing.</p>'
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    logger = config.get("trainer", {}).get("logger", {}).get("init_args", {})
    logger.update(name=f"{record.name}_best", version=None, hparams_shown=None, hparams_metrics=None)
    config.pop("ckpt_path", None)
    (output / BEST_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = f"python -m app.cli fit --config {output / BEST_CONFIG}"
    return out + (
        f"<p>Its configuration, ready to re-run (into runs/…/{_e(record.name)}_best): "
        f'<a href="{BEST_CONFIG}">{BEST_CONFIG}</a></p>\n<pre>{_e(command)}</pre>'
    )


def _parameter_charts(record: StudyRecord, output: Path) -> list[tuple[str, str]]:
    """One scatter per searched key: complete trials filled, pruned ones hollow at their last reported value."""
    charts = []
    for index, key in enumerate(record.space):
        short = key.rsplit(".", 1)[-1]
        figure, axes = _figure(f"{record.metric} against {short}")
        axes.set(xlabel=short, ylabel=record.metric)
        for state, style in ((TrialState.COMPLETE, {"color": "C0"}), (TrialState.PRUNED, {"facecolors": "none"})):
            points = [(t.params[key], reported_value(t)) for t in record.trials if t.state == state and key in t.params]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            if points:
                xs, ys = zip(*points, strict=True)
                xs = [str(x) for x in xs] if any(isinstance(x, str | bool) for x in xs) else xs
                axes.scatter(xs, ys, label=state.name.lower(), edgecolors="C0", **style)
        if record.space[key].get("log"):
            axes.set_xscale("log")
        if axes.has_data():
            axes.legend(loc="best", fontsize="small")
            charts.append(_save(figure, output, f"sweep_{index}.png", f"{record.metric} against {key}"))
    return charts
