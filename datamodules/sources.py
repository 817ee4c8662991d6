"""Where data comes from: local files (also ``pkg://`` files inside installed packages) or a hub dataset."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from app.assets import resolve_path
from app.errors import TbxFinetuneError

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
    dataset: str | None, data_files: str | dict[str, str | list[str]] | None, dataset_config: str | None = None
) -> datasets.DatasetDict:
    """Load every split with ``datasets.load_dataset``; failures become one error naming the source."""
    if dataset is None and data_files is None:
        raise TbxFinetuneError("no data: set data.dataset (a hub name) or data.data_files (local files)")
    kwargs: dict = {}
    if data_files is not None:
        files = {"train": data_files} if isinstance(data_files, str | list) else dict(data_files)
        resolved = {
            split: [resolve_path(p) for p in ([paths] if isinstance(paths, str) else paths)]
            for split, paths in files.items()
        }
        for split, paths in resolved.items():
            for p in paths:
                if not os.path.isfile(p):
                    raise TbxFinetuneError(
                        f"data.data_files[{split!r}]: file {p!r} does not exist; fix the path in the config"
                    )
        first = next(iter(resolved.values()))[0]
        dataset = dataset or builder_for(first)
        kwargs["data_files"] = resolved
        if dataset == "csv" and ".tsv" in [s.lower() for s in Path(first).suffixes]:
            kwargs["sep"] = "\t"
    try:
        loaded = datasets.load_dataset(dataset, dataset_config, **kwargs)
    except TbxFinetuneError:
        raise
    except Exception as err:  # datasets raises many types: not found, no network, parse errors, bad bytes
        source = kwargs.get("data_files") or dataset
        raise TbxFinetuneError(
            f"could not load data from {source!r}: {type(err).__name__}: {err}. Check data.dataset / "
            "data.data_files (a hub dataset needs network; local files must be UTF-8 csv/json/parquet)"
        ) from err
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def find_split(splits: datasets.DatasetDict, names: tuple[str, ...]) -> str | None:
    """The first split present under one of ``names`` (hub datasets disagree on 'validation' vs 'dev')."""
    return next((name for name in names if name in splits), None)
