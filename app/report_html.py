"""The report's page and charts: one self-contained ``index.html`` (inline CSS, no script, no network) beside PNGs.

Charts are drawn by matplotlib on ``Figure`` objects with an explicit Agg canvas: no pyplot, so no global figure
registry, no backend switch, nothing left open in the process that called the report. Long curves are thinned for
drawing only (``scalars.csv`` keeps every point). Every name, label and value that reaches the page goes through
``html.escape``: a class or tag called ``<script>`` stays text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.report import (
    best_runs,
    comparability_warnings,
    differing_hparams,
    direction,
    metric_tags,
    metrics_of,
    per_class_table,
    seed_groups,
)

if TYPE_CHECKING:
    from app.report import Baseline, RunRecord, SeedGroup

_Cell = str | tuple[str, str]
"""A table cell's HTML, or its HTML and a CSS class."""

MAX_DRAWN = 2000
"""Points per curve drawn; a longer curve is thinned to about this many (a chart is ~800 px wide)."""
_PER_CLASS = ("val/recall/", "val/precision/")
_SPLIT_COLOURS = {"train": "C0", "val": "C1", "test": "C2"}
_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1rem 1.5rem 3rem; color: #1f2328; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin: 1.4rem 0 .4rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; }
.best { font-weight: 700; background: #dafbe1; }
.muted, .tag { color: #656d76; font-size: .85em; } .tag { font-family: ui-monospace, monospace; }
.warning { border: 2px solid #d4a72c; background: #fff8c5; padding: .6rem .9rem; border-radius: 6px; margin: .8rem 0; }
.ended { padding: .4rem .8rem; border-radius: 6px; display: inline-block; }
.ended.finished { background: #dafbe1; } .ended.failed { background: #ffebe9; }
.ended.no-end { background: #fff8c5; } .ended.unknown { background: #f6f8fa; }
img.chart { max-width: 100%; display: block; margin: .3rem 0 1rem; border: 1px solid #eaeef2; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85em; }
details { margin: .5rem 0; } summary { cursor: pointer; font-weight: 600; }
details.run > summary { font-size: 1.3rem; margin-top: 1.4rem; }
"""


# ------------------------------------------------------------------------------------------------------------- page
def write_page(records: Sequence[RunRecord], summary: pd.DataFrame, output: Path, sections: Sequence[str] = ()) -> Path:
    """Draw the charts into ``output`` and write ``output/index.html``; return the page's path. ``sections``: HTML
    drawn by others (a sweep's), placed before the comparison of the runs."""
    title = records[0].name if len(records) == 1 else f"{len(records)} runs"
    body = [
        f"<h1>Training report: {_e(title)}</h1>",
        f'<p class="muted">Written {_e(datetime.now().isoformat(timespec="seconds"))} from '
        f"{_e(', '.join(str(r.path) for r in records))}. Every point is in "
        '<a href="scalars.csv">scalars.csv</a>; one row per run in <a href="summary.csv">summary.csv</a>.</p>',
    ]
    body += sections
    if len(records) > 1:
        body.append(comparison_section(records, summary, output))
    body += [run_section(i, r, output, folded=len(records) > 1) for i, r in enumerate(records)]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)} · tbx-finetune report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    index = output / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_section(index: int, record: RunRecord, output: Path, folded: bool = False) -> str:
    """Everything about one run; folded in ``<details>`` on a page comparing several."""
    parts = [
        f'<p class="muted">Folder: <span class="tag">{_e(record.path)}</span></p>',
        _ending(record),
        _hparams(record),
        _metrics(record),
        _baseline(record),
        _data(record),
        _images(run_charts(output, index, record)),
        _alerts(record),
        _confusion_matrix(index, record, output),
        _per_class(record),
    ]
    content = "\n".join(p for p in parts if p)
    if folded:
        return (
            f'<details class="run" id="run-{index}" open>\n<summary>{_e(record.name)}</summary>\n{content}\n</details>'
        )
    return f'<section id="run-{index}">\n<h2>{_e(record.name)}</h2>\n{content}\n</section>'


def comparison_section(records: Sequence[RunRecord], summary: pd.DataFrame, output: Path) -> str:
    groups = seed_groups(records)
    parts = [f"<h2>Comparison of {len(records)} runs</h2>"]
    parts += [f'<div class="warning"><b>Not comparable:</b> {_e(w)}</div>' for w in comparability_warnings(records)]
    parts += [_differing(records), _final_metrics(records, summary), _seed_groups(records, groups)]
    parts += [_recall_differences(records), _images(comparison_charts(output, records, groups))]
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------- one run's parts
def _ending(record: RunRecord) -> str:
    ending = record.ending
    out = f'<p class="ended {_e(ending.state.replace(" ", "-"))}">How it ended: <b>{_e(ending.text)}</b></p>'
    if len(ending.sessions) > 1:
        lines = []
        for number, session in enumerate(ending.sessions, 1):
            start = "" if session.resumed_at is None else f"resumed at step {session.resumed_at}, "
            steps = f"steps {session.first_step}–{session.last_step}" if session.first_step is not None else "no steps"
            status = {1: "finished", 2: "failure", None: "no session end"}.get(session.status, "status unknown")
            lines.append(f"<li>session {number}: {_e(start + steps)}, {_e(status)}</li>")
        out += "\n<ul>" + "".join(lines) + "</ul>"
        out += (
            '<p class="muted">TensorBoard (and this report) show each step once: a resumed session hides what an '
            "earlier one wrote at or after its first step.</p>"
        )
    return out


def _hparams(record: RunRecord) -> str:
    rows = [
        [f'{_e(name)} <span class="tag">{_e(key)}</span>', _e(record.hparams.get(key))]
        for key, name in record.shown.items()
    ]
    out = "<h3>Hyperparameters</h3>\n"
    out += _table(["setting", "value"], rows) if rows else '<p class="muted">The record has no HPARAMS session.</p>'
    if record.config_text is not None:
        out += (
            f"<details><summary>Full configuration (config.yaml)</summary><pre>{_e(record.config_text)}</pre></details>"
        )
    elif record.hparams:
        rows = [[f'<span class="tag">{_e(k)}</span>', _e(v)] for k, v in record.hparams.items()]
        out += "<details><summary>Full configuration (HPARAMS; no config.yaml beside the events)</summary>"
        out += _table(["key", "value"], rows) + "</details>"
    return out


def _metrics(record: RunRecord) -> str:
    metrics = {t: v for t, v in metrics_of(record).items() if not t.startswith(_PER_CLASS)}
    if not metrics:
        return '<h3>Metrics</h3>\n<p class="muted">No train/val/test metrics in the record.</p>'
    rows = [
        [
            _metric_name(record.metric_names, tag),
            _num(v["final"]),
            _num(v["final step"]),
            _num(v["best"]) if direction(tag) else '<span class="muted">—</span>',
            _num(v["best step"]) if direction(tag) else "",
        ]
        for tag, v in metrics.items()
    ]
    out = "<h3>Metrics</h3>\n" + _table(["metric", "final", "at step", "best", "at step"], rows)
    out += '<p class="muted">Best: highest for accuracy, F1, recall, precision; lowest for losses.</p>'
    if not any(t.startswith("test/") for t in record.tags):
        out += '<p class="muted">No test phase in the record (no test/* scalars).</p>'
    return out


def _baseline(record: RunRecord) -> str:
    baseline = record.baseline
    if baseline is None:
        return ""
    text = (
        f"Always answering “{baseline.label}” is right on {baseline.count} of {baseline.total} {baseline.split} "
        f"examples: majority-class baseline {baseline.accuracy:.4g}."
    )
    tag = f"{baseline.split}/acc"
    points = record.points(tag)
    if points.empty:
        return f"<h3>Accuracy against the majority class</h3>\n<p>{_e(text)}</p>"
    final = float(points["value"].iloc[-1])
    margin = final - baseline.accuracy
    verdict = f"{tag} {final:.4g} is {abs(margin):.4g} {'above' if margin > 0 else 'below or at'} it."
    css = "" if margin > 0 else ' class="warning"'
    return f"<h3>Accuracy against the majority class</h3>\n<p{css}>{_e(text)} {_e(verdict)}</p>"


def _data(record: RunRecord) -> str:
    if not record.label_counts:
        return ""
    classes = record.labels or []
    rows = [[_e(split), *(_num(counts.get(c)) for c in classes)] for split, counts in record.label_counts.items()]
    return "<details><summary>Examples per class and split</summary>" + _table(["split", *classes], rows) + "</details>"


def _alerts(record: RunRecord) -> str:
    alerts = record.alerts()
    if not alerts:
        none = "None." if "health/alerts" in record.tags else "No gradient health record."
        return f'<h3>Health alerts</h3>\n<p class="muted">{none}</p>'
    rows = [[_num(step), _e(kind), _e(message)] for step, kind, message in alerts]
    return "<h3>Health alerts</h3>\n<p>Marked on the loss curve.</p>" + _table(["step", "kind", "message"], rows)


def _confusion_matrix(index: int, record: RunRecord, output: Path) -> str:
    if record.confusion_matrix is None:
        return ""
    step, png = record.confusion_matrix
    name = f"run{index}_confusion_matrix.png"
    (output / name).write_bytes(png)
    return f'<h3>Confusion matrix (val, step {step})</h3>\n<img class="chart" src="{_e(name)}" alt="confusion matrix">'


def _per_class(record: RunRecord) -> str:
    tables = {kind: per_class_table([record], kind) for kind in ("recall", "precision")}
    table = pd.DataFrame({kind: t.iloc[:, 0] for kind, t in tables.items() if not t.empty})
    if table.empty:
        return ""
    return "<h3>Per class (val, final)</h3>\n" + _frame(table, "class", _present)


def _present(value: Any) -> _Cell:
    """A number of a table built by pandas, where a run without that class holds NaN: shown as a dash."""
    return _num(None if pd.isna(value) else float(value))


# ------------------------------------------------------------------------------------------------ comparison's parts
def _differing(records: Sequence[RunRecord]) -> str:
    table = differing_hparams(records)
    if table.empty:
        return "<h3>Settings that differ</h3>\n<p>None: the runs have the same settings.</p>"
    return "<h3>Settings that differ</h3>\n" + _frame(table, "setting", _e)


def comparison_tags(records: Sequence[RunRecord]) -> list[str]:
    """The metrics of every run, without the per-class ones, in the first run's order."""
    return list(dict.fromkeys(t for r in records for t in metric_tags(r) if not t.startswith(_PER_CLASS)))


def _final_metrics(records: Sequence[RunRecord], summary: pd.DataFrame) -> str:
    """Metrics as rows, runs as columns (a few runs, many metrics): each run's final value, the best one starred."""
    tags = comparison_tags(records)
    if not tags:
        return ""
    names = {k: v for r in records for k, v in r.metric_names.items()}
    best = best_runs(summary, tags)
    finals = [metrics_of(r) for r in records]
    rows = [["how it ended", *(_e(r.ending.state) for r in records)]]
    for tag in tags:
        cells = [_metric_name(names, tag)]
        for record, final in zip(records, finals, strict=True):
            value = _e(final[tag]["final"]) if tag in final else "—"
            marked = record.name in best.get(tag, ())
            cells.append((value + " ★", "best num") if marked else (value, "num"))
        rows.append(cells)
    return (
        "<h3>Final metrics</h3>\n"
        + _table(["metric", *(r.name for r in records)], rows)
        + '<p class="muted">★ best run per metric: highest accuracy, F1, recall, precision; lowest loss.</p>'
    )


def _seed_groups(records: Sequence[RunRecord], groups: Sequence[SeedGroup]) -> str:
    if not groups:
        return ""
    tags = comparison_tags(records)
    out = ["<h3>Same settings, different seeds (mean ± std of final values)</h3>"]
    for group in groups:
        members = [records[i] for i in group.members]
        finals = [metrics_of(r) for r in members]
        values = {tag: pd.Series([f[tag]["final"] for f in finals if tag in f], dtype="float64") for tag in tags}
        rows = [[_e(tag), _e(v.mean()) + " ± " + _e(v.std()), _num(len(v))] for tag, v in values.items() if len(v)]
        names = ", ".join(f"{r.name} (seed {r.seed})" for r in members)
        out.append(
            f"<p>{_e(names)}: drawn as one band on the charts below.</p>"
            + _table(["metric", "mean ± std", "runs"], rows)
        )
    return "\n".join(out)


def _recall_differences(records: Sequence[RunRecord]) -> str:
    table = per_class_table(records, "recall")
    if table.empty:
        return ""
    return (
        "<h3>Per-class recall (val, final)</h3>\n"
        + _frame(table.sort_values("spread", ascending=False), "class", _present)
        + '<p class="muted">Sorted by the spread between runs (largest first).</p>'
    )


# ----------------------------------------------------------------------------------------------------------- charts
def run_charts(output: Path, index: int, record: RunRecord) -> list[tuple[str, str]]:
    """One run's charts, drawn into ``output``: (file name, caption) pairs for the page."""
    alerts = sorted({step for step, _, _ in record.alerts()})
    specs = [
        ("loss", "Loss: train vs val", ["train/loss", "train/loss_epoch", "val/loss", "test/loss"], alerts, None),
        ("accuracy", "Accuracy: train vs val", ["train/acc", "val/acc", "test/acc"], [], record.baseline),
        ("lr", "Learning rate", [t for t in record.tags if t.startswith("lr-")], [], None),
        ("grad_norm", "Total gradient norm", ["grad_norm/total"], alerts, None),
    ]
    out = []
    for key, title, tags, marks, line in specs:
        present = [t for t in tags if t in record.tags]
        if present:
            out.append(_save(_run_chart(title, record, present, marks, line), output, f"run{index}_{key}.png", title))
    return out


def _run_chart(title: str, record: RunRecord, tags: list[str], marks: list[int], line: Baseline | None) -> Figure:
    """One run's curves on one chart: colour by split, test as a single marker, alerts as vertical lines."""
    figure, axes = _figure(title)
    for number, tag in enumerate(tags):
        points = _thin(record.points(tag))
        style = {"marker": "o", "markersize": 3} if len(points) <= 50 else {"linewidth": 1}
        if tag.startswith("test/"):
            style = {"marker": "X", "markersize": 9, "linestyle": "none"}
        elif tag.endswith("_epoch"):  # the epoch mean of a per-step curve: same colour, dashed
            style["linestyle"] = "--"
        colour = _SPLIT_COLOURS.get(tag.split("/", 1)[0], f"C{number}")
        axes.plot(points["step"], points["value"], label=_safe(tag), color=colour, **style)
    for step in marks:
        axes.axvline(step, color="#cf222e", linestyle=":", linewidth=1.2, alpha=0.8)
    if marks:
        axes.plot([], [], color="#cf222e", linestyle=":", label=f"health alert ({len(marks)})")
    if line is not None:
        label = f"majority baseline ({line.split}: {line.label}) {line.accuracy:.3g}"
        axes.axhline(line.accuracy, color="#6e7781", linestyle="--", linewidth=1, label=_safe(label))
    if "grad_norm/total" in tags and (record.points("grad_norm/total")["value"] > 0).all():
        axes.set_yscale("log")
    axes.legend(fontsize=8)
    return figure


def comparison_charts(output: Path, records: Sequence[RunRecord], groups: Sequence[SeedGroup]) -> list[tuple[str, str]]:
    """The comparison's charts, drawn into ``output``: (file name, caption) pairs for the page."""
    series = _series(records, groups)
    lr = sorted({t for r in records for t in r.tags if t.startswith("lr-")})[:1]  # one parameter group's
    specs = [
        ("compare_loss", "Loss (solid: train, dashed: val)", ["train/loss", "val/loss"]),
        ("compare_accuracy", "Accuracy (solid: val, dotted: train)", ["val/acc", "train/acc"]),
        ("compare_f1", "F1 (solid: val)", ["val/f1"]),
        ("compare_lr", f"Learning rate ({', '.join(lr)})", lr),
    ]
    return [
        _save(_comparison_chart(title, series, tags), output, f"{name}.png", title)
        for name, title, tags in specs
        if any(t in r.tags for r in records for t in tags)
    ]


def _comparison_chart(title: str, series: list[tuple[str, list[RunRecord]]], tags: list[str]) -> Figure:
    """Several runs on one chart: colour by run (or seed group), line style by tag."""
    figure, axes = _figure(title)
    palette = colormaps["tab10" if len(series) <= 10 else "tab20"].colors
    styles = ["-", "--", ":"] if tags[0].startswith("train/") else ["-", ":"]
    for (label, members), colour in zip(series, cycle(palette)):
        for tag, linestyle in zip(tags, styles, strict=False):
            if len(members) == 1:
                points = _thin(members[0].points(tag))
                marker = "o" if 0 < len(points) <= 50 else None
                axes.plot(points["step"], points["value"], color=colour, linestyle=linestyle, marker=marker,
                          markersize=3, linewidth=1)  # fmt: skip
            else:
                _band(axes, members, tag, colour, linestyle)
        axes.plot([], [], color=colour, linewidth=3, label=_safe(label))
    axes.legend(fontsize=8)
    return figure


def _save(figure: Figure, output: Path, name: str, caption: str) -> tuple[str, str]:
    """Write the chart as ``output/name`` and let its figure go; (file name, caption) for the page."""
    figure.savefig(output / name)
    figure.clear()
    return name, caption


def _figure(title: str) -> tuple[Figure, Axes]:
    """A figure outside pyplot, on its own Agg canvas."""
    figure = Figure(figsize=(8.5, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=_safe(title), xlabel="step")
    axes.grid(alpha=0.3)
    return figure, axes


def _series(records: Sequence[RunRecord], groups: Sequence[SeedGroup]) -> list[tuple[str, list[RunRecord]]]:
    """What the comparison charts draw: each seed group as one band, every other run as its own line."""
    grouped = {i for g in groups for i in g.members}
    series = [(g.label(records), [records[i] for i in g.members]) for g in groups]
    return series + [(r.name, [r]) for i, r in enumerate(records) if i not in grouped]


def _band(axes: Axes, members: Sequence[RunRecord], tag: str, colour: Any, linestyle: str) -> None:
    """Mean ± std over the runs at the steps they all logged (else at every step any logged)."""
    columns = {
        r.name: r.points(tag).drop_duplicates("step", keep="last").set_index("step")["value"]
        for r in members
        if not r.points(tag).empty
    }
    if not columns:
        return
    table = pd.concat(columns, axis=1).sort_index()
    common = table.dropna()
    table = common if not common.empty else table
    stats = _thin(pd.DataFrame({"step": table.index, "value": table.mean(axis=1), "std": table.std(axis=1)}))
    std = stats["std"].fillna(0.0)
    axes.plot(stats["step"], stats["value"], color=colour, linestyle=linestyle, linewidth=1.2)
    axes.fill_between(stats["step"], stats["value"] - std, stats["value"] + std, color=colour, alpha=0.2, linewidth=0)


def _thin(points: pd.DataFrame) -> pd.DataFrame:
    """At most ~``MAX_DRAWN`` evenly spaced points, the last one kept: for drawing only."""
    if len(points) <= MAX_DRAWN:
        return points
    return points.iloc[[*range(0, len(points) - 1, math.ceil(len(points) / MAX_DRAWN)), len(points) - 1]]


def _safe(text: str) -> str:
    """Literal text for matplotlib: ``$`` would start mathtext, and a leading ``_`` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


# -------------------------------------------------------------------------------------------------------- HTML bits
def _table(header: Iterable[str], rows: Iterable[Sequence[_Cell]]) -> str:
    """Rows of cells that are HTML already (escaped by the caller), a cell with a CSS class as ``(html, class)``;
    the header is plain text, escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(map(_td, row))}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _frame(table: pd.DataFrame, corner: str, cell: Callable[[Any], _Cell]) -> str:
    """A pandas table: its index as the first column (headed ``corner``), every value through ``cell``."""
    return _table([corner, *table.columns], ([_e(label), *map(cell, row)] for label, row in table.iterrows()))


def _td(cell: _Cell) -> str:
    return f'<td class="{cell[1]}">{cell[0]}</td>' if isinstance(cell, tuple) else f"<td>{cell}</td>"


def _images(charts: list[tuple[str, str]]) -> str:
    return "\n".join(f'<img class="chart" src="{_e(name)}" alt="{_e(title)}">' for name, title in charts)


def _metric_name(names: dict[str, str], tag: str) -> str:
    """The display name (HPARAMS) with the tag beside it, as HTML."""
    name = names.get(tag)
    return (f"{_e(name)} " if name and name != tag else "") + f'<span class="tag">{_e(tag)}</span>'


def _num(value: Any) -> _Cell:
    return _e(value), "num"


def _e(value: Any) -> str:
    """Any value as escaped text: floats to 4 significant digits (``nan`` stays visible), missing as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return html.escape(str(value).lower())
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")  # (nan stays "nan")
    return html.escape(str(value))
