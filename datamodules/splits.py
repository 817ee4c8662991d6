"""Turning whatever splits and label column a dataset has into train/val/test with integer ``labels``.

Independent of modality: text and image datamodules both use it, so both validate the same way and
report bad data with the same messages.
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
    train = loaded["train"]
    val_name = find_split(loaded, VALIDATION_SPLIT_NAMES)
    val = loaded[val_name] if val_name else None
    test = loaded["test"] if "test" in loaded else None
    carve = [
        (name, fraction)
        for name, fraction, have in (("test", test_fraction, test), ("val", val_fraction, val))
        if have is None
    ]
    for name, fraction in carve:
        if not 0.0 < fraction < 1.0:
            raise TbxFinetuneError(
                f"the data has no {name} split and data.{name}_fraction={fraction} cannot carve one out of "
                "train; set it between 0 and 1 or provide the split in data.data_files"
            )
        parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
        train = parts["train"]
        if name == "test":
            test = parts["test"]
        else:
            val = parts["test"]
    return {"train": train, "val": val, "test": test}


def label_names_of(train: datasets.Dataset, column: str, fixed: Sequence[str] | None) -> list[str]:
    """Label names in id order: the fixed list if given, else ClassLabel names, else the sorted values."""
    if fixed:
        return [str(name) for name in fixed]
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(v) for v in sorted(set(train[column]))]


def keep_labels(split: datasets.Dataset, column: str, names: Sequence[str]) -> datasets.Dataset:
    """Drop rows whose label is outside ``names`` (e.g. a corpus's 'plot' rows in a sentiment task)."""
    feature = split.features[column]
    allowed = set(names)
    if isinstance(feature, datasets.ClassLabel):
        return split.filter(lambda v: feature.int2str(v) in allowed, input_columns=column)
    return split.filter(lambda v: str(v) in allowed, input_columns=column)


def encode_labels(split: datasets.Dataset, column: str, names: Sequence[str], split_name: str) -> datasets.Dataset:
    """Add the integer ``labels`` column; a label never seen in train is an error, not a silent new class."""
    feature = split.features[column]
    values = feature.int2str(split[column]) if isinstance(feature, datasets.ClassLabel) else split[column]
    present = {str(v) for v in values}
    unknown = sorted(present - set(names))
    if unknown:
        raise TbxFinetuneError(
            f"{split_name} split: labels {unknown[:10]} in column {column!r} do not occur in the training labels "
            f"{list(names)[:20]}; fix the data or list the classes to keep in data.labels"
        )
    to_id = {name: i for i, name in enumerate(names)}
    ids = [to_id[str(v)] for v in values]
    if LABEL_COLUMN in split.column_names:
        split = split.remove_columns(LABEL_COLUMN)
    return split.add_column(LABEL_COLUMN, ids)


def require_columns(split: datasets.Dataset, columns: Sequence[str], split_name: str) -> None:
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise TbxFinetuneError(
            f"{split_name} split: column(s) {missing} not found; it has {split.column_names}. "
            "Set data.text_column / data.label_column to the right names"
        )


def require_rows(split: datasets.Dataset, split_name: str) -> None:
    if len(split) == 0:
        raise TbxFinetuneError(f"{split_name} split is empty; it needs at least one example")


def subsample(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of ``limit`` rows (all rows when ``limit`` is None or larger)."""
    if limit is None or limit >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(limit))


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
    """Validate, split, filter, subsample and label-encode: the whole schema check, before any training."""
    for name, split in loaded.items():
        require_columns(split, [*required_columns, label_column], name)
    if labels:
        loaded = datasets.DatasetDict({n: keep_labels(s, label_column, labels) for n, s in loaded.items()})
    splits = standard_splits(loaded, val_fraction, test_fraction, seed)
    names = label_names_of(splits["train"], label_column, labels)
    if len(names) < 2:
        raise TbxFinetuneError(f"train split has {len(names)} distinct label(s) {names}; a classifier needs two")
    limits = max_samples if isinstance(max_samples, dict) else dict.fromkeys(splits, max_samples)
    unknown_keys = set(limits) - set(splits)
    if unknown_keys:
        raise TbxFinetuneError(f"data.max_samples has unknown split(s) {sorted(unknown_keys)}; use train/val/test")
    prepared = {}
    for name, split in splits.items():
        require_rows(split, name)
        split = subsample(split, limits.get(name), seed)
        prepared[name] = encode_labels(split, label_column, names, name)
    return prepared, names
