"""``python -m app.cli report RUN [RUN ...] -o DIR``: a run's record as a page readable without a TensorBoard server.

Everything is read back through TensorBoard's own reader, ``EventAccumulator``, the way the TensorBoard UI reads it:
over a run folder it reads every events file in name order and applies purge (a resumed session hides the points an
earlier session wrote at or after its start step), so the report shows exactly the curves TensorBoard would. The
reader keeps only the *first* HPARAMS record per tag of a folder, so how the run ended (the *last* session end) and
where it was resumed are read per events file, with the same reader over each file.

This module turns runs into tables (``load_runs``: every scalar point, one summary row per run, comparisons between
runs); ``app.report_html`` draws the charts and writes the page. It reads files, not our objects (of the project it
takes only the error type and the tag names the loggers write), so it also reads runs written by other tools (no
HPARAMS, no ``config.yaml``).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from common.errors import TbxFinetuneError
from loggers.run_config import LABEL_COUNTS_TAG
from loggers.tensorboardx import RESUMED_TAG

KEEP_EVERYTHING = dict.fromkeys(("compressedHistograms", "images", "audio", "scalars", "histograms", "tensors"), 0)
"""``size_guidance`` that keeps every point of every kind (TensorBoard's default samples some kinds down)."""
_FACTS_ONLY = {**dict.fromkeys(KEEP_EVERYTHING, 1), "scalars": 0}
"""Per-file reads need every scalar step but none of the pictures."""

EVENTS_GLOB = "events.out.tfevents.*"
CONFUSION_MATRIX_TAG = "val/confusion_matrix"
TEXT_SUFFIX = "/text_summary"  # tensorboardX's add_text appends it; the project's own writer no longer does
STATUS_SUCCESS, STATUS_FAILURE = 1, 2  # tensorboard.plugins.hparams.api_pb2.Status
SEED_KEY = "seed_everything"
_PLUMBING = ("trainer.logger", "ckpt_path", "config")
"""Config keys that differ between any two runs by construction (where a run writes, what it resumed from)."""
_MAX_WORDS = frozenset({"acc", "accuracy", "f1", "recall", "precision", "auc", "auroc", "top1", "top5"})
_SPLIT_RANK = {"val": 0, "test": 1, "train": 2}
"""The splits whose scalars are metrics, in the order the report lists them (other metric tags: rank 3, after)."""
ENDED = {
    "finished": "finished",
    "failed": "interrupted or crashed (the session ended with status failure)",
    "no end": "still running, or killed (no session end in the record)",
    "unknown": "not recorded (no HPARAMS session end; written by another tool?)",
}


# ----------------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FileFacts:
    """What one events file says about the session that wrote it."""

    first_step: int | None
    last_step: int | None
    trains: bool  # has train/* points: a fit, not an evaluation added later
    starts_session: bool  # an HPARAMS session start: a fit (or a resumed fit) begins here
    resumed_step: int | None  # the step our logger's `run/resumed` marks, when this file holds it
    end_status: int | None  # the HPARAMS session end in this file, if any


@dataclass(frozen=True)
class Session:
    """One fit session (a process that wrote the run until it finished, failed or was killed)."""

    first_step: int | None
    last_step: int | None
    status: int | None  # the last session end status, None: no end recorded
    resumed_at: int | None  # None for the first session


@dataclass(frozen=True)
class Ending:
    """How the run ended: ``state`` is one of ``ENDED``'s keys; ``resumed_at`` the steps later sessions began at."""

    state: str
    resumed_at: tuple[int, ...]
    sessions: tuple[Session, ...]

    @property
    def text(self) -> str:
        resumed = ", ".join(map(str, self.resumed_at))
        return ENDED[self.state] + (f"; resumed at step {resumed}" if resumed else "")


@dataclass(frozen=True)
class Baseline:
    """Always predicting the largest class of ``split``: the accuracy a classifier must beat to have learnt."""

    split: str
    label: str
    count: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.count / self.total


@dataclass
class RunRecord:
    """Everything the report shows of one run folder."""

    name: str
    path: Path
    scalars: pd.DataFrame  # tag, step, wall_time, value: every point, in the record's order
    hparams: dict[str, Any]
    shown: dict[str, str]  # curated hparam key → display name (HPARAMS ``differs``)
    metric_names: dict[str, str]  # metric tag → display name
    config_text: str | None
    texts: dict[str, list[tuple[int, str]]]
    confusion_matrix: tuple[int, bytes] | None
    label_counts: dict[str, dict[str, int]] | None
    ending: Ending
    tags: list[str] = field(default_factory=list)

    def points(self, tag: str) -> pd.DataFrame:
        """One tag's points in the record's order (empty when the run has none)."""
        return self._by_tag.get(tag, self.scalars.iloc[0:0])

    @cached_property
    def _by_tag(self) -> dict[str, pd.DataFrame]:
        return dict(iter(self.scalars.groupby("tag", sort=False)))

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.yaml`` flattened to dotted keys, as the HPARAMS keys are; the hparams when it is absent, empty or
        not plain YAML."""
        try:
            loaded = yaml.safe_load(self.config_text) if self.config_text else None
        except yaml.YAMLError:
            loaded = None
        return (flatten(loaded) if isinstance(loaded, dict) else {}) or dict(self.hparams)

    @property
    def seed(self) -> Any:
        return self.hparams.get(SEED_KEY, self.config.get(SEED_KEY))

    @property
    def labels(self) -> list[str] | None:
        """The class names: from the data's label counts, else from the per-class scalars."""
        if self.label_counts:
            return list(next(iter(self.label_counts.values())))
        names = [t.split("/", 2)[2] for t in self.tags if t.startswith(("val/recall/", "val/precision/"))]
        return list(dict.fromkeys(names)) or None

    def class_name(self, in_tag: str) -> str:
        """The class a per-class tag names: the writer made tag-safe what the label counts keep as written."""
        if self.label_counts and in_tag not in (labels := self.labels or []):
            matches = [label for label in labels if tag_safe(label) == in_tag]
            return matches[0] if len(matches) == 1 else in_tag
        return in_tag

    @property
    def baseline(self) -> Baseline | None:
        """Of the test split when the run was tested, else of the split its accuracy was measured on."""
        measured = [split for split in ("test", "val") if f"{split}/acc" in self.tags]
        for split in (*measured, "test", "val"):
            row = (self.label_counts or {}).get(split) or {}
            if sum(row.values()) > 0:  # the largest class's share: the accuracy of always answering it
                label = max(row, key=row.get)
                return Baseline(split, label, row[label], sum(row.values()))
        return None

    def alerts(self) -> list[tuple[int, str, str]]:
        """(step, kind, message) of every health alert, in step order; also steps the count marks without text."""
        found = [
            (step, tag.split("/", 1)[1], re.sub(r"^step \d+:\s*", "", text))
            for tag, items in self.texts.items()
            if tag.startswith("health/")
            for step, text in items
        ]
        counted = self.points("health/alerts")
        texted = {step for step, _, _ in found}
        found += [(int(s), "alert", "counted by health/alerts") for s in counted[counted["value"] > 0]["step"]]
        return sorted(a for a in found if a[1] != "alert" or a[0] not in texted)


def tag_safe(name: str) -> str:
    """``name`` as TensorBoard writers put it in a tag (tensorboardX's ``_clean_tag``): other characters → ``_``."""
    return re.sub(r"[^-/\w.]", "_", name).lstrip("/")


# ----------------------------------------------------------------------------------------------------------- reading
def check_run_folder(path: Path) -> None:
    """Fail with what to pass instead when ``path`` is not a folder of events files."""
    if not path.exists():
        raise TbxFinetuneError(f"{path}: no such folder; pass a run folder such as runs/<name>/version_<n>")
    if not path.is_dir() or not any(p.is_file() for p in path.glob(EVENTS_GLOB)):
        below = sorted({str(p.parent) for p in path.rglob(EVENTS_GLOB)}) if path.is_dir() else []
        hint = f"; it holds runs: {', '.join(below[:3])}{' …' if len(below) > 3 else ''}" if below else ""
        raise TbxFinetuneError(
            f"{path}: not a run folder (no {EVENTS_GLOB} files in it){hint}; pass run folders such as "
            "runs/<name>/version_<n>"
        )


def read_run(path: str | Path, name: str | None = None) -> RunRecord:
    """One run folder through ``EventAccumulator`` (every point kept, purge applied) plus its ``config.yaml``."""
    path = Path(path)
    check_run_folder(path)
    events = _reload(path, KEEP_EVERYTHING)
    tags = events.Tags()
    hparams, shown, metric_names = _hparams(_plugin(events, "hparams"))
    config_file = path / "config.yaml"
    config_text = config_file.read_text(encoding="utf-8", errors="replace") if config_file.is_file() else None
    texts = {t.removesuffix(TEXT_SUFFIX): _texts(events, t) for t in _plugin(events, "text")}
    counts = texts.get(LABEL_COUNTS_TAG)
    images = events.Images(CONFUSION_MATRIX_TAG) if CONFUSION_MATRIX_TAG in tags["images"] else []
    points = [(tag, e.step, e.wall_time, e.value) for tag in tags["scalars"] for e in events.Scalars(tag)]
    scalars = pd.DataFrame(points, columns=["tag", "step", "wall_time", "value"])
    return RunRecord(
        name=name or f"{path.resolve().parent.name}/{path.resolve().name}",
        path=path,
        scalars=scalars.astype({"tag": str, "step": "int64", "wall_time": "float64", "value": "float64"}),
        hparams=hparams,
        shown=shown,
        metric_names=metric_names,
        config_text=config_text,
        texts=texts,
        confusion_matrix=(images[-1].step, images[-1].encoded_image_string) if images else None,
        label_counts=parse_label_counts(counts[-1][1]) if counts else None,
        ending=read_ending(path),
        tags=list(tags["scalars"]),
    )


def read_runs(paths: Sequence[str | Path]) -> list[RunRecord]:
    """Every run, checked first (a wrong folder fails before anything is read), named uniquely."""
    for path in paths:
        check_run_folder(Path(path))
    records = [read_run(path) for path in paths]
    names = [r.name for r in records]
    for index, record in enumerate(records):
        if record.name in names[:index]:  # the same name from two places: keep both apart
            record.name = f"{record.name} ({names[:index].count(record.name) + 1})"
    return records


def load_runs(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scalars, summary)``: every scalar point of every run, and one row per run; what the CSV files hold."""
    records = read_runs(paths)
    return scalars_table(records), summary_table(records)


def _reload(path: Path, size_guidance: dict[str, int]) -> EventAccumulator:
    """``path`` (a run folder or one events file) read by ``EventAccumulator``. TensorBoard logs a warning on every
    resumed session it purges; the report says where the run resumed, so that warning is dropped while reading."""
    tensorboard_log = logging.getLogger("tensorboard")
    tensorboard_log.addFilter(_not_purge_notice)
    try:
        return EventAccumulator(str(path), size_guidance=size_guidance).Reload()
    finally:
        tensorboard_log.removeFilter(_not_purge_notice)


def _not_purge_notice(record: logging.LogRecord) -> bool:
    return "Detected out of order event.step" not in record.getMessage()


def _plugin(events: EventAccumulator, name: str) -> dict[str, bytes]:
    try:
        return events.PluginTagToContent(name)
    except KeyError:  # no record of that plugin in this run
        return {}


def _texts(events: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    """The text plugin's strings (a scalar string, or tensorboardX's one-element list), one per step."""
    out = []
    for event in events.Tensors(tag):
        array = tensor_util.make_ndarray(event.tensor_proto)
        cells = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in array.flatten()]
        out.append((event.step, "\n".join(cells)))
    return out


def _hparams(contents: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(hparams, curated key → display name, metric tag → display name) from the HPARAMS plugin's records."""
    # a record the run does not hold parses as an empty message (no hparams, no columns)
    start = plugin_data_pb2.HParamsPluginData.FromString(contents.get("_hparams_/session_start_info", b""))
    hparams = {key: _value(value) for key, value in sorted(start.session_start_info.hparams.items())}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(contents.get("_hparams_/experiment", b"")).experiment
    shown = {i.name: i.display_name or i.name for i in experiment.hparam_infos if i.differs}
    metrics = {i.name.tag: i.display_name or i.name.tag for i in experiment.metric_infos}
    if not shown:  # another tool's record: what it chose to log is what it considers the run's hparams
        shown = {key: key for key in hparams}
    return hparams, {k: v for k, v in shown.items() if k in hparams}, metrics


def _value(value: Any) -> Any:
    """A ``google.protobuf.Value`` as Python: whole numbers as int (a batch size, not 16.0)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return getattr(value, kind) if kind in ("string_value", "bool_value") else None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def parse_label_counts(markdown: str) -> dict[str, dict[str, int]] | None:
    """``| split | <class> … |`` with one row per split → {split: {class: count}}; None when not that table."""
    rows = [_cells(line) for line in markdown.splitlines() if line.strip().startswith("|")]
    rows = [row for row in rows if not all(re.fullmatch(r":?-+:?", cell) for cell in row)]
    if len(rows) < 2 or rows[0][0].lower() != "split":
        return None
    classes = rows[0][1:]
    try:
        return {row[0]: dict(zip(classes, map(int, row[1:]), strict=True)) for row in rows[1:]}
    except ValueError:  # a cell that is not a count, or a row of another width
        return None


def _cells(line: str) -> list[str]:
    """A markdown table row's cells; ``\\|`` is a literal bar inside a cell (a class name may hold one)."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


# ----------------------------------------------------------------------------------------------------------- endings
def read_ending(path: Path) -> Ending:
    """Sessions and how the last one ended, from each events file read on its own (in the folder's name order).

    A fit session starts at a file with an HPARAMS session start (our logger writes one per fit, a resumed fit too),
    or, in another tool's record, at a file whose first training step is below the steps already written.
    """
    files = sorted((p for p in path.glob(EVENTS_GLOB) if p.is_file()), key=lambda p: p.name)
    facts = [file_facts(f) for f in files]
    sessions = _sessions(facts)
    resumed = tuple(s.resumed_at for s in sessions if s.resumed_at is not None)
    state = "unknown"  # also when no file records a session start or end: another tool's record
    if any(f.starts_session or f.end_status is not None for f in facts):
        state = {STATUS_SUCCESS: "finished", STATUS_FAILURE: "failed", None: "no end"}.get(sessions[-1].status, state)
    return Ending(state, resumed, tuple(sessions))


def file_facts(path: Path) -> FileFacts:
    events = _reload(path, _FACTS_ONLY)
    scalar_tags = events.Tags()["scalars"]
    steps = [e.step for tag in scalar_tags for e in events.Scalars(tag)]
    contents = _plugin(events, "hparams")
    end = contents.get("_hparams_/session_end_info")
    resumed = [e.step for tag in events.Tags()["tensors"] if tag == RESUMED_TAG for e in events.Tensors(tag)]
    return FileFacts(
        resumed_step=min(resumed, default=None),
        first_step=min(steps, default=None),
        last_step=max(steps, default=None),
        trains=any(tag.startswith("train/") for tag in scalar_tags),
        starts_session="_hparams_/session_start_info" in contents,
        end_status=plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status if end else None,
    )


def _sessions(files: list[FileFacts]) -> list[Session]:
    groups: list[list[FileFacts]] = []
    for facts in files:
        # the last step the files before this one wrote
        written = max((f.last_step for group in groups for f in group if f.last_step is not None), default=None)
        goes_back = None not in (facts.first_step, written) and facts.trains and facts.first_step < written
        if not groups or facts.starts_session or goes_back:
            groups.append([])
        groups[-1].append(facts)
    sessions = []
    for index, group in enumerate(groups):
        firsts = [f.first_step for f in group if f.first_step is not None]
        ends = [f.end_status for f in group if f.end_status is not None]
        # where the logger says the run resumed (`run/resumed`), else the first step this session logged
        resumed = next((f.resumed_step for f in group if f.resumed_step is not None), min(firsts, default=None))
        sessions.append(
            Session(
                first_step=min(firsts, default=None),
                last_step=max((f.last_step for f in group if f.last_step is not None), default=None),
                status=ends[-1] if ends else None,
                resumed_at=resumed if index else None,
            )
        )
    return sessions


# ----------------------------------------------------------------------------------------------------------- tables
def direction(tag: str) -> str | None:
    """``max`` for accuracy-like tags, ``min`` for losses, None when better is not known (learning rate, norms)."""
    for part in tag.lower().split("/"):
        if part in _MAX_WORDS:
            return "max"
        if "loss" in part:
            return "min"
    return None


def metric_tags(record: RunRecord) -> list[str]:
    """The run's metrics, the HPARAMS ones first (in their order), then by split: val, test, train."""
    tags = [t for t in record.tags if t.split("/", 1)[0] in _SPLIT_RANK or (direction(t) and "/" not in t)]
    declared = [t for t in record.metric_names if t in tags]
    rest = sorted(set(tags) - set(declared), key=lambda t: (_SPLIT_RANK.get(t.split("/", 1)[0], 3), t.count("/"), t))
    return declared + rest


def final_and_best(points: pd.DataFrame, tag: str) -> dict[str, float]:
    """The last point in the record's order and the best one (earliest on ties); best only with a ``direction``."""
    last = points.iloc[-1]
    out = {"final": float(last["value"]), "final step": int(last["step"]), "best": math.nan, "best step": math.nan}
    mode = direction(tag)
    values = points["value"].reset_index(drop=True)
    if mode and values.notna().any():
        where = int(values.idxmax() if mode == "max" else values.idxmin())
        out["best"], out["best step"] = float(values.iloc[where]), int(points["step"].iloc[where])
    return out


def metrics_of(record: RunRecord) -> dict[str, dict[str, float]]:
    return {tag: final_and_best(record.points(tag), tag) for tag in metric_tags(record)}


def scalars_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Every point: run, tag, step, wall_time, value."""
    frames = [r.scalars.assign(run=r.name) for r in records]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run"])
    return table.reindex(columns=["run", "tag", "step", "wall_time", "value"])


def summary_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: how it ended, its curated hparams, final and best of each metric with their steps."""
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "run": record.name,
            "path": str(record.path),
            "ended": record.ending.state,
            "resumed at": ";".join(map(str, record.ending.resumed_at)),
        }
        row |= {display: record.hparams.get(key) for key, display in record.shown.items()}
        row |= {f"{tag} {what}": value for tag, values in metrics_of(record).items() for what, value in values.items()}
        if (baseline := record.baseline) is not None:
            row |= {"majority baseline": baseline.accuracy, "majority baseline split": baseline.split}
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------ comparisons
@dataclass(frozen=True)
class SeedGroup:
    """Runs whose configurations differ only in ``seed_everything`` (and values equal to it): one setting, n seeds."""

    members: tuple[int, ...]  # indices into the records
    seeds: tuple[Any, ...]

    def label(self, records: Sequence[RunRecord]) -> str:
        seeds = ", ".join(map(str, self.seeds))
        return f"{records[self.members[0]].name} +{len(self.members) - 1} (seeds {seeds}: mean ± std)"


def comparable_params(record: RunRecord) -> dict[str, Any]:
    """The settings two runs are compared on: the HPARAMS record, else ``config.yaml`` less where it was written."""
    params = record.hparams or record.config
    return {k: v for k, v in params.items() if not k.startswith(_PLUMBING)}


def differing_hparams(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Rows: the settings whose values are not the same in every run (display names where curated); columns: runs."""
    params = [comparable_params(r) for r in records]
    names = {k: v for r in records for k, v in r.shown.items()}
    keys = sorted({k for p in params for k in p}, key=lambda k: (k not in names, k))
    differ = [k for k in keys if len({repr(p.get(k, "—")) for p in params}) > 1]
    return pd.DataFrame(
        [[p.get(k, "—") for p in params] for k in differ],
        index=[names.get(k, k) for k in differ],
        columns=[r.name for r in records],
    )


def seed_groups(records: Sequence[RunRecord]) -> list[SeedGroup]:
    """Groups of ≥ 2 runs with distinct seeds and otherwise equal settings, in the order they were given."""
    groups: list[list[int]] = []
    for index, record in enumerate(records):
        if record.seed is None:
            continue
        for group in groups:
            if _same_but_seed(records[group[0]], record) and record.seed not in {records[i].seed for i in group}:
                group.append(index)
                break
        else:
            groups.append([index])
    return [SeedGroup(tuple(g), tuple(records[i].seed for i in g)) for g in groups if len(g) > 1]


def _same_but_seed(a: RunRecord, b: RunRecord) -> bool:
    """Equal settings once the seed, and any value that is the seed itself in both runs (derived), are set aside."""
    pa, pb = comparable_params(a), comparable_params(b)
    return all(
        key == SEED_KEY or pa.get(key, "—") == pb.get(key, "—") or (pa.get(key) == a.seed and pb.get(key) == b.seed)
        for key in set(pa) | set(pb)
    )


def comparability_warnings(records: Sequence[RunRecord]) -> list[str]:
    """Why the runs' numbers may not be comparable: other classes, or other amounts of data per split."""
    warnings = []
    labels = {r.name: r.labels for r in records if r.labels is not None}
    if len({frozenset(map(tag_safe, v)) for v in labels.values()}) > 1:  # (tag-safe: some come from tags)
        listed = "; ".join(f"{name}: {', '.join(v)}" for name, v in labels.items())
        warnings.append(f"the runs classify different label sets ({listed})")
    sizes = {r.name: {s: sum(c.values()) for s, c in r.label_counts.items()} for r in records if r.label_counts}
    if len({tuple(sorted(v.items())) for v in sizes.values()}) > 1:
        listed = "; ".join(f"{name}: " + ", ".join(f"{s} {n}" for s, n in v.items()) for name, v in sizes.items())
        warnings.append(f"the runs saw different amounts of data (examples per split: {listed})")
    missing = [r.name for r in records if not r.label_counts]
    if sizes and missing:
        warnings.append(f"no {LABEL_COUNTS_TAG} in {', '.join(missing)}: their data sizes cannot be checked")
    return warnings


def per_class_table(records: Sequence[RunRecord], kind: str = "recall") -> pd.DataFrame:
    """Final ``val/<kind>/<class>`` per class (rows) and run (columns), with the spread between runs."""
    prefix = f"val/{kind}/"
    columns = {}
    for record in records:
        tags = [t for t in record.tags if t.startswith(prefix)]
        columns[record.name] = {
            record.class_name(t[len(prefix) :]): float(record.points(t)["value"].iloc[-1]) for t in tags
        }
    table = pd.DataFrame(columns)
    if not table.empty and len(records) > 1:
        table["spread"] = table.max(axis=1) - table.min(axis=1)
    return table


def best_runs(summary: pd.DataFrame, tags: Iterable[str]) -> dict[str, set[str]]:
    """Per metric tag, the runs with the best final value, all of them on a tie (NaN and missing never win)."""
    best = {}
    for tag in tags:
        column, mode = f"{tag} final", direction(tag)
        if mode and column in summary and summary[column].notna().any():
            value = summary[column].max() if mode == "max" else summary[column].min()
            best[tag] = set(summary.loc[summary[column] == value, "run"])
    return best


# --------------------------------------------------------------------------------------------------------------- CLI
def write_report(paths: Sequence[str | Path], output: str | Path, storage: str | None = None) -> Path:
    """Read the runs (all of them checked before anything is written), then write the page, charts and CSV files.

    A sweep's study folder (``runs/<study>``, ``app.sweep``) stands for its trials' runs and adds the sweep's section;
    ``storage`` is the study's URL when it is not the SQLite file in that folder."""
    from app.report_html import write_page  # matplotlib: only when a page is written
    from app.sweep_report import is_study, read_study, sweep_section

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TbxFinetuneError(f"-o {output}: is a file; name a folder for the report")
    studies = {Path(p): read_study(p, storage) for p in paths if is_study(p)}
    paths = [run for p in paths for run in (studies[Path(p)].runs if Path(p) in studies else [p])]
    if not paths:
        raise TbxFinetuneError(f"{', '.join(map(str, studies))}: the study has no trial runs yet")
    try:
        records = read_runs(paths)
    except OSError as err:  # a folder or file without read permission
        raise TbxFinetuneError(f"cannot read {err.filename} ({err.strerror}); check its permissions") from err
    try:
        output.mkdir(parents=True, exist_ok=True)
        scalars_table(records).to_csv(output / "scalars.csv", index=False)
        summary = summary_table(records)
        summary.to_csv(output / "summary.csv", index=False)
        return write_page(records, summary, output, [sweep_section(study, output) for study in studies.values()])
    except OSError as err:
        raise TbxFinetuneError(
            f"cannot write the report to {output} ({err.strerror}: {err.filename}); pass a writable folder with -o"
        ) from err


def main(argv: Sequence[str] | None = None) -> None:
    """``report RUN [RUN ...] -o DIR``; our errors as one line on stderr and exit code 2, as the CLI's."""
    parser = argparse.ArgumentParser(
        prog="tbx-finetune report",
        description="Turn run folders into a report readable without a TensorBoard server: index.html with charts, "
        "scalars.csv (every point) and summary.csv (one row per run).",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="a run folder (runs/<name>/version_<n>), or a sweep's runs/<study>"
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the report into")
    parser.add_argument("--storage", help="a sweep study's Optuna URL, when it is not the optuna.db in its folder")
    args = parser.parse_args(argv)
    try:
        index = write_report(args.runs, args.output, args.storage)
    except TbxFinetuneError as err:
        parser.exit(2, f"tbx-finetune: error: {err}\n")
    print(f"report: {index}")


if __name__ == "__main__":
    main()
