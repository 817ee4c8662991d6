"""What every classification datamodule shares: label names for the model, and the four loaders.

Subclasses say where their raw splits come from (``_load``), what else a prepared split must satisfy (``_check``),
how a split becomes a dataset a loader can batch (``_dataset``) and, if needed, how to collate it (``_collate``).
Validation (``prepare_splits``), batch sizes, shuffling and workers are then the same for text and images.
"""

from __future__ import annotations

import os
from typing import Any

import datasets
import numpy as np
from lightning.pytorch import LightningDataModule
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import Dataset, DistributedSampler, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from common.errors import TbxFinetuneError
from datamodules.splits import LABEL_COLUMN, prepare_splits

STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
"""The loaders each Lightning stage needs (``predict`` reads the split named by ``predict_split``)."""


def training_seed() -> int:
    """The seed a training order draws from: ``PL_GLOBAL_SEED`` (what ``seed_everything`` sets, and what Lightning
    seeds its own distributed samplers with), else 0. The same on every rank."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ClassificationDataModule(LightningDataModule):
    """Base of ``TextDataModule`` and ``ImageDataModule``; its ``hparams`` need ``batch_size``,
    ``eval_batch_size``, ``num_workers`` and ``predict_split``."""

    _label_names: list[str] | None = None
    _splits: dict[str, datasets.Dataset] | None = None

    def _load(self) -> tuple[datasets.DatasetDict, str, list[str]]:
        """The raw splits, their label column and the other columns every split must have."""
        raise NotImplementedError

    def _check(self, splits: dict[str, datasets.Dataset]) -> None:
        """Checks of the prepared splits beyond ``prepare_splits``' own (raise ``TbxFinetuneError``)."""

    def _prepare(self) -> None:
        """Load, validate, split and label-encode once: at the first question about the data (the CLI asks for
        ``num_labels`` at instantiation, before the Trainer exists), so bad data fails in seconds."""
        if self._splits is not None:
            return
        hp = self.hparams
        if hp.predict_split not in ("train", "val", "test"):
            raise TbxFinetuneError(f"data.predict_split={hp.predict_split!r}: use train, val or test")
        loaded, label_column, columns = self._load()
        splits, names = prepare_splits(
            loaded, label_column, columns, hp.labels, hp.val_fraction, hp.test_fraction, hp.max_samples, hp.seed
        )
        self._check(splits)
        self._splits, self._label_names = splits, names

    def _split(self, name: str) -> datasets.Dataset:
        """The prepared split a loader named ``name`` reads (``predict`` reads ``predict_split``)."""
        self._prepare()
        return self._splits[self.hparams.predict_split if name == "predict" else name]

    def _dataset(self, name: str) -> Dataset:
        """The dataset a loader batches for ``name`` (``train``, ``val``, ``test`` or ``predict``)."""
        raise NotImplementedError

    def _collate(self) -> Any:
        """The loader's ``collate_fn`` (``None``: PyTorch's default)."""
        return None

    def _eval_sampler(self, name: str) -> Sampler | None:
        """The order of the ``val`` or ``test`` loader (``None``: the dataset's)."""
        return None

    def _train_sampler(self) -> Sampler | None:
        """The training order. A sampler given here must be stateful (its ``state_dict`` goes into the loader's) and,
        to run under DDP, a ``DistributedSampler`` sharding itself.

        This default: ``None`` off DDP, the loader's own shuffle (its ``RandomSampler`` keeps its generator in the
        loader's state). Under DDP, the plain shuffle as a ``DistributedSampler`` seeded by the training seed: its
        order is a function of (seed, epoch), so a resumed epoch is the same order from the saved position.
        Lightning's own wrapper re-shuffles a ``RandomSampler`` whose seed is drawn from the RNG at the epoch's
        start, which a resume cannot redraw."""
        shards = getattr(getattr(self.trainer, "strategy", None), "distributed_sampler_kwargs", None)
        return (
            DistributedSampler(self._dataset("train"), shuffle=True, seed=training_seed(), **shards) if shards else None
        )

    @property
    def label_names(self) -> list[str]:
        self._prepare()
        return list(self._label_names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_counts(self) -> dict[str, list[int]]:
        """Examples per class (in ``label_names`` order) of each of train, val and test (the prepared splits): what a
        reader of the run needs to judge its accuracy (the majority-class baseline) and to compare runs."""
        self._prepare()
        return {
            name: np.bincount(np.asarray(split[LABEL_COLUMN]), minlength=len(self._label_names)).tolist()
            for name, split in self._splits.items()
        }

    def _loader(self, name: str, train: bool = False) -> StatefulDataLoader:
        """A loader whose position and shuffle order go into Lightning's checkpoints (``StatefulDataLoader``): a
        run resumed mid-epoch sees the rest of that epoch's order, each example once, not the epoch anew."""
        hp = self.hparams
        sampler = self._train_sampler() if train else self._eval_sampler(name) if name in ("val", "test") else None
        order = {"sampler": sampler} if sampler is not None else {"shuffle": train}
        return StatefulDataLoader(
            self._dataset(name),
            batch_size=hp.batch_size if train else hp.eval_batch_size or 2 * hp.batch_size,
            **order,
            collate_fn=self._collate(),
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            # page-locked batches only when they go to a CUDA device: the host→device copy is then asynchronous
            pin_memory=isinstance(getattr(self.trainer, "accelerator", None), CUDAAccelerator),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val")

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("predict")
