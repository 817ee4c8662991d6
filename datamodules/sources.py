"""Where data comes from: local files (also ``pkg://`` files inside installed packages) or a hub dataset."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets.table import CastError

from common.assets import resolve_path
from common.errors import TbxFinetuneError, causes

_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSION = {".bz2", ".gz", ".xz", ".zst", ".zip"}
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")


def builder_for(path: str) -> str:
    """The ``datasets`` builder for a file name, looking through a compression suffix (``x.csv.bz2``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _BUILDERS:
        return _BUILDERS[suffixes[-1]]
    raise TbxFinetuneError(
        f"data file {path!r}: cannot tell its format from the name; use .csv, .tsv, .json, .jsonl or "
        ".parquet (optionally compressed), or set data.dataset to the builder name"
    )


def load_splits(
    dataset: str | None,
    data_files: str | list[str] | dict[str, str | list[str]] | None,
    dataset_config: str | None = None,
) -> datasets.DatasetDict:
    """Load every split with ``datasets.load_dataset``; failures become one error naming the source.

    Local files are loaded one split at a time, so that an unreadable or empty file is reported with
    its split and path (``datasets`` otherwise fails on the whole set with a generic generation error).
    """
    if data_files is None:
        if dataset is None:
            raise TbxFinetuneError("no data: set data.dataset (a hub name) or data.data_files (local files)")
        loaded = _load(f"data.dataset={dataset!r}", dataset, dataset_config)
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    files = {"train": data_files} if isinstance(data_files, str | list) else dict(data_files)
    splits = {}
    for split, paths in files.items():
        resolved = [resolve_path(p) for p in ([paths] if isinstance(paths, str) else paths)]
        for path in resolved:
            if not os.path.isfile(path):
                raise TbxFinetuneError(f"data.data_files[{split!r}]: file {path!r} does not exist; fix the path")
        builder = dataset or builder_for(resolved[0])
        extra = {"sep": "\t"} if builder == "csv" and ".tsv" in [x.lower() for x in Path(resolved[0]).suffixes] else {}
        splits[split] = _load(
            f"data.data_files[{split!r}]={resolved}",
            builder,
            dataset_config,
            data_files={split: resolved},
            split=split,
            **extra,
        )
    return datasets.DatasetDict(splits)


def _load(source: str, *args, **kwargs) -> datasets.Dataset | datasets.DatasetDict:
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as err:  # datasets raises many types: not found, no network, parse errors, bad bytes
        cause = list(causes(err))[-1]
        if "corresponds to no data" in str(cause):
            raise TbxFinetuneError(f"{source}: the split is empty; it needs at least one example") from err
        if kwargs.get("data_files"):
            paths = [path for paths in kwargs["data_files"].values() for path in paths]
            # datasets could not put rows or files with different columns into one table
            schema_error = any(isinstance(e, CastError) or "Schema at index" in str(e) for e in causes(err))
            found = _find_bad_row(args[0], paths, kwargs.get("sep", ","), schema_error)
            if found:
                raise TbxFinetuneError(f"{source}: {found}") from err
        reason = " ".join(str(cause).split())  # one line: datasets' and Arrow's messages span several
        raise TbxFinetuneError(
            f"{source}: could not be loaded ({type(cause).__name__}: {reason[:400]}). A hub dataset needs network; "
            "local files must be UTF-8 csv/tsv/json/parquet with a header row"
        ) from err


def _find_bad_row(builder: str, paths: list[str], sep: str, schema_error: bool) -> str | None:
    """The row of local files that failed to load, found by reading them: one that is not JSON, or (after a
    schema error) the first whose keys, or file header, differ from the first row's. ``datasets`` only says that
    a cast failed, and only when the odd row falls in a later file or 10 MB chunk. ``None``: nothing found."""
    rows = _json_rows(paths) if builder == "json" else _csv_headers(paths, sep) if builder == "csv" else iter(())
    first = None
    try:
        for where, keys in rows:
            if isinstance(keys, json.JSONDecodeError):
                return f"{where} is not valid JSON ({keys.msg}); fix that row or remove it"
            first = first or (where, keys)
            if schema_error and keys != first[1]:
                noun, fix = (
                    ("column", "every file the same header") if builder == "csv" else ("key", "every row the same keys")
                )
                extra, missing = sorted(keys - first[1]), sorted(first[1] - keys)
                differs = [f"has extra {noun}(s) {extra}"] * bool(extra) + [f"lacks {missing}"] * bool(missing)
                return (
                    f"the {noun}s differ: {where} {' and '.join(differs)} compared with {first[0]} "
                    f"({sorted(first[1])}); give {fix}"
                )
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _json_rows(paths: list[str]) -> Iterator[tuple[str, set[str] | json.JSONDecodeError]]:
    """``(where, keys)`` of each object in JSON-lines files or JSON arrays, or ``(where, error)`` where one
    does not parse. Compressed files are skipped."""
    for path in paths:
        if Path(path).suffix.lower() in _COMPRESSION:
            continue
        with open(path, encoding="utf-8") as f:
            if f.read(64).lstrip().startswith("["):  # one JSON array: parsed whole
                f.seek(0)
                try:
                    items = json.load(f)
                except json.JSONDecodeError as err:
                    yield f"{path!r} at line {err.lineno} column {err.colno}", err
                    return
                for n, item in enumerate(items, 1):
                    yield f"object {n} of {path!r}", set(item) if isinstance(item, dict) else set()
                continue
            f.seek(0)
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        item = json.loads(line.strip())
                    except json.JSONDecodeError as err:
                        yield f"line {n} of {path!r} at column {err.colno}", err
                        return
                    yield f"line {n} of {path!r}", set(item) if isinstance(item, dict) else set()


def _csv_headers(paths: list[str], sep: str) -> Iterator[tuple[str, set[str]]]:
    """``(where, columns)`` of each file's header row."""
    for path in paths:
        if Path(path).suffix.lower() not in _COMPRESSION:
            with open(path, encoding="utf-8", newline="") as f:
                yield f"the header of {path!r}", set(next(csv.reader(f, delimiter=sep), []))


def find_split(splits: datasets.DatasetDict, names: tuple[str, ...]) -> str | None:
    """The first split present under one of ``names`` (hub datasets disagree on 'validation' vs 'dev')."""
    return next((name for name in names if name in splits), None)
