"""Turning whatever splits and label column a dataset has into train/val/test with integer ``labels``.

Independent of modality: text and image datamodules both use it, so both validate the same way and
report bad data with the same messages.

Every prepared split gets a ``labels`` column (the name transformers' collators expect) whose feature is a
``datasets.ClassLabel`` carrying the class names, so the split knows them (``features["labels"].names``).
The source label column stays as it was: the text datamodule and the prediction writer read it.

- Labels are matched as text: ``ClassLabel`` ids by their names, any other value by ``str(value)``. So an
  int column 0/1 matches names ``"0"``/``"1"``, and a ``ClassLabel`` whose order differs from ``data.labels``
  is re-mapped by name, not by id.
- A label column is read once per step as Arrow data (``with_format("arrow")``). Since ``datasets`` 4,
  ``split[column]`` is a lazy column that formats one row at a time (about 70 µs a row).
- Names become ids with ``ClassLabel.str2int``; ``add_column(..., feature=ClassLabel)`` stores them. We do
  not use ``cast_column`` on a string copy: for a ``ClassLabel`` it runs ``Dataset.cast``, a ``map`` that
  rewrites every column (image bytes too) into a new cache file. ``align_labels_with_mapping`` lower-cases
  names (``"A"`` and ``"a"`` would collide) and overwrites the source column. ``class_encode_column`` only
  gives sorted names, and it also replaces the column.
- An empty label (a blank CSV cell, a null, or ``ClassLabel`` -1 as in unlabelled hub test splits) is a data
  error. The error names the split, the column and the row count; we never make a class called ``""`` or
  ``"None"``, and never raise a bare traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets

from common.errors import TbxFinetuneError
from datamodules.sources import VALIDATION_SPLIT_NAMES, find_split

LABEL_COLUMN = "labels"
"""The integer label column every prepared split has (the name transformers' collators expect)."""


def standard_splits(
    loaded: datasets.DatasetDict, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, datasets.Dataset]:
    """Return ``{"train", "val", "test"}``, carving seeded, disjoint val/test sets out of train if absent."""
    if "train" not in loaded:
        raise TbxFinetuneError(f"the data has no 'train' split (it has {sorted(loaded)}); name one 'train'")
    val_name = find_split(loaded, VALIDATION_SPLIT_NAMES)
    splits = {"train": loaded["train"], "val": loaded.get(val_name), "test": loaded.get("test")}
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if splits[name] is not None:
            continue
        if not 0.0 < fraction < 1.0:
            raise TbxFinetuneError(
                f"the data has no {name} split and data.{name}_fraction={fraction} cannot carve one out of "
                "train; set it between 0 and 1 or provide the split in data.data_files"
            )
        parts = splits["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
        splits["train"], splits[name] = parts["train"], parts["test"]
    return splits


def label_texts(split: datasets.Dataset, column: str, split_name: str) -> list[str | None]:
    """Each row's label as text (``ClassLabel`` ids by name, other values by ``str``); ``None`` where empty."""
    feature = split.features[column]
    values = split.with_format("arrow")[column].to_pylist()  # one Arrow read, not a row-by-row Column
    if isinstance(feature, datasets.ClassLabel):
        return [feature.names[v] if v is not None and v >= 0 else None for v in values]
    if not isinstance(feature, datasets.Value):
        raise TbxFinetuneError(
            f"{split_name} split: column {column!r} holds {feature}, not one label per row; set "
            "data.label_column to a column of strings, integers or class ids"
        )
    return [None if v is None or not str(v).strip() else str(v) for v in values]


def require_present(texts: list[str | None], column: str, split_name: str) -> None:
    """Every row has a label: a blank cell would otherwise become a class of its own, or a traceback."""
    missing = [row for row, text in enumerate(texts) if text is None]
    if missing:
        raise TbxFinetuneError(
            f"{split_name} split: {len(missing)} of {len(texts)} rows have no label in column {column!r} (an empty "
            f"cell, null or ClassLabel -1), e.g. rows {missing[:5]} counting from 0; fill in their labels or "
            "remove those rows"
        )


def label_names_of(train: datasets.Dataset, column: str, fixed: Sequence[str] | None) -> list[str]:
    """Label names in id order: the fixed list if given, else ClassLabel names, else the sorted values."""
    if fixed:
        names = [str(name) for name in fixed]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise TbxFinetuneError(f"data.labels lists {repeated} more than once; name each class once, in id order")
        return names
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    distinct = train.with_format("arrow")[column].unique().drop_null().to_pylist()
    return [str(v) for v in sorted(distinct)]  # sorted as values: 2 before 10 in an int column


def keep_labels(split: datasets.Dataset, column: str, names: Sequence[str], split_name: str) -> datasets.Dataset:
    """Drop rows whose label is outside ``names`` (e.g. a corpus's 'plot' rows in a sentiment task)."""
    allowed = {str(name) for name in names}
    keep = [row for row, text in enumerate(label_texts(split, column, split_name)) if text in allowed]
    return split if len(keep) == len(split) else split.select(keep)


def encode_labels(split: datasets.Dataset, column: str, names: Sequence[str], split_name: str) -> datasets.Dataset:
    """Add the ``ClassLabel`` ``labels`` column; a label never seen in train is an error, not a silent new class."""
    texts = label_texts(split, column, split_name)
    require_present(texts, column, split_name)
    classes = datasets.ClassLabel(names=[str(name) for name in names])
    unknown = sorted(set(texts) - set(classes.names))
    if unknown:
        raise TbxFinetuneError(
            f"{split_name} split: labels {unknown[:10]} in column {column!r} do not occur in the training labels "
            f"{list(names)[:20]}; fix the data or list the classes to keep in data.labels"
        )
    ids = classes.str2int(texts)  # exact names only: every text is one of them (checked above)
    if LABEL_COLUMN in split.column_names:
        split = split.remove_columns(LABEL_COLUMN)
    return split.add_column(LABEL_COLUMN, ids, feature=classes)


def prepare_splits(
    loaded: datasets.DatasetDict,
    label_column: str,
    required_columns: Sequence[str],
    labels: Sequence[str] | None,
    val_fraction: float,
    test_fraction: float,
    max_samples: int | dict[str, int] | None,
    seed: int,
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Validate, split, filter, subsample and label-encode: the whole schema check, before any training.

    Missing labels are checked in the splits as loaded (before ``data.labels`` could drop them silently and
    before carving spreads them over val/test), and only in the splits we use: a hub dataset's extra,
    unlabelled split (IMDB's ``unsupervised``, labels -1) is not an error.
    """
    for name, split in loaded.items():
        missing = [c for c in [*required_columns, label_column] if c not in split.column_names]
        if missing:
            raise TbxFinetuneError(
                f"{name} split: column(s) {missing} not found; it has {split.column_names}. "
                "Set data.text_column / data.label_column to the right names"
            )
    used = {"train", "test", find_split(loaded, VALIDATION_SPLIT_NAMES)}
    for name, split in loaded.items():
        if name in used:
            require_present(label_texts(split, label_column, name), label_column, name)
    if labels:
        loaded = datasets.DatasetDict({n: keep_labels(s, label_column, labels, n) for n, s in loaded.items()})
    splits = standard_splits(loaded, val_fraction, test_fraction, seed)
    names = label_names_of(splits["train"], label_column, labels)
    if len(names) < 2:
        raise TbxFinetuneError(f"train split has {len(names)} distinct label(s) {names}; a classifier needs two")
    empty = sorted(set(names) - set(label_texts(splits["train"], label_column, "train")))
    if empty:  # a class the model would have an output for but never see
        raise TbxFinetuneError(
            f"train split: class(es) {empty[:10]} have no examples; add examples or list the classes to keep in "
            "data.labels"
        )
    limits = max_samples if isinstance(max_samples, dict) else dict.fromkeys(splits, max_samples)
    unknown_keys = set(limits) - set(splits)
    if unknown_keys:
        raise TbxFinetuneError(f"data.max_samples has unknown split(s) {sorted(unknown_keys)}; use train/val/test")
    prepared = {}
    for name, split in splits.items():
        if len(split) == 0:
            raise TbxFinetuneError(f"{name} split is empty; it needs at least one example")
        limit = limits.get(name)
        if limit is not None and limit < len(split):  # a seeded random subset of ``limit`` rows
            split = split.shuffle(seed=seed).select(range(limit))
        prepared[name] = encode_labels(split, label_column, names, name)
    return prepared, names
