"""Where data comes from: local files (also ``pkg://`` files inside installed packages) or a hub dataset."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from common.assets import resolve_path
from common.errors import TbxFinetuneError

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
        cause = _root_cause(err)
        if "corresponds to no data" in str(cause):
            raise TbxFinetuneError(f"{source}: the split is empty; it needs at least one example") from err
        raise TbxFinetuneError(
            f"{source}: could not be loaded ({type(cause).__name__}: {cause}). A hub dataset needs network; "
            "local files must be UTF-8 csv/tsv/json/parquet with a header row"
        ) from err


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


def find_split(splits: datasets.DatasetDict, names: tuple[str, ...]) -> str | None:
    """The first split present under one of ``names`` (hub datasets disagree on 'validation' vs 'dev')."""
    return next((name for name in names if name in splits), None)
