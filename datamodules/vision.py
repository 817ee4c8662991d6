"""Image classification data: loader workers only decode images to ``uint8`` tensors of one size.

Augmentation, scaling to [0, 1] and normalisation happen later, batched on the device, in the model
(``modules/augment.py``). The image size and channel count are stated once: here (``image_size``,
``num_channels``), or, when unset, read from the model's own files (``preprocessor_config.json`` and
``config.json`` of ``image_processor``, which the CLI links to ``model.model_name_or_path``). The CLI
links ``num_channels`` on to the model, as it does ``num_labels``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import datasets
import numpy as np
import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from common.assets import image_processor_config, load_pretrained
from common.errors import TbxFinetuneError
from datamodules.base import ClassificationDataModule
from datamodules.image_sources import ImageSource, check_images, load_image_source
from datamodules.splits import LABEL_COLUMN


class DecodeImages:
    """Batch transform run in loader workers: images → ``pixel_values`` ``uint8 (B, C, H, W)``; picklable."""

    def __init__(self, column: str, shape: tuple[int, int, int] | None, size: int, channels: int) -> None:
        self.column, self.shape, self.size, self.channels = column, shape, size, channels

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        images = [self._decode(item) for item in batch[self.column]]
        return {"pixel_values": torch.from_numpy(np.stack(images)), LABEL_COLUMN: torch.tensor(batch[LABEL_COLUMN])}

    def _decode(self, item: Any) -> np.ndarray:
        if self.shape is not None:  # raw pixels (IDX, CSV)
            array = np.frombuffer(item, np.uint8).reshape(self.shape)
            if self.shape[:2] == (self.size, self.size) and self.shape[2] == self.channels:
                return array.transpose(2, 0, 1)
            item = Image.fromarray(array[..., 0] if self.shape[2] == 1 else array)
        image = item.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.size, self.size):
            image = ImageOps.fit(image, (self.size, self.size), Image.Resampling.BILINEAR)  # short side, centre crop
        array = np.asarray(image, dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


class ImageDataModule(ClassificationDataModule):
    """Image classification splits from a hub dataset, an imagefolder, IDX files or pixel CSVs.

    Args:
        dataset: Hub image dataset name (its images must be ``datasets.Image`` features).
        data_dir: A local folder: ``imagefolder`` layout (one sub-folder per class) or MNIST-style IDX files.
        data_files: Pixel CSV file(s): a path (the train split) or ``{split: path}``; ``pkg://`` paths work.
        dataset_config: The hub dataset's configuration name, if it has several.
        image_column: Column holding the images (hub datasets; ``img`` for CIFAR-10).
        label_column: Column holding the label; for a pixel CSV without header row, ``first`` or ``last``.
        labels: Classes to keep, in id order (by name); ``None`` keeps all.
        class_names: Names for integer labels 0..N-1 of IDX/CSV data (in id order); default ``"0"``, ``"1"`` …
        image_size: Side of the square images the loaders produce. ``None``: from the model's image processor.
        num_channels: 1 (grey) or 3 (RGB). ``None``: the model's, else the data's own (IDX/CSV 1, files 3).
        image_processor: The model's name or folder; the CLI links it to ``model.model_name_or_path``.
        batch_size: Training batch size per device.
        eval_batch_size: Validation/test/predict batch size (defaults to ``2 * batch_size``).
        val_fraction: Share of train held out as validation when the data has no validation split.
        test_fraction: Share of train held out as test when the data has no test split.
        max_samples: Cap on rows per split (``int`` for all, or ``{train: n, val: n, test: n}``), seeded.
        predict_split: Which split ``predict`` runs on.
        num_workers: DataLoader worker processes (they decode images).
        seed: Seed for the held-out splits and subsampling (independent of the training seed).
    """

    def __init__(
        self,
        dataset: str | None = None,
        data_dir: str | None = None,
        data_files: str | dict[str, str] | None = None,
        dataset_config: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        labels: list[str] | None = None,
        class_names: list[str] | None = None,
        image_size: PositiveInt | None = None,
        num_channels: int | None = None,
        image_processor: str | None = None,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        val_fraction: ClosedUnitInterval = 0.1,
        test_fraction: ClosedUnitInterval = 0.1,
        max_samples: PositiveInt | dict[str, PositiveInt] | None = None,
        predict_split: str = "test",
        num_workers: NonNegativeInt = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if num_channels not in (None, 1, 3):
            raise TbxFinetuneError(f"data.num_channels={num_channels}: use 1 (grey) or 3 (RGB)")
        self._source: ImageSource | None = None

    # ------------------------------------------------------------------------- raw data and labels
    def _load(self) -> tuple[datasets.DatasetDict, str, list[str]]:
        hp = self.hparams
        self._source = load_image_source(
            hp.dataset, hp.data_dir, hp.data_files, hp.dataset_config, hp.image_column, hp.label_column, hp.class_names
        )
        return self._source.splits, self._source.label_column, [self._source.image_column]

    def _check(self, splits: dict[str, datasets.Dataset]) -> None:
        if self._source.local_files:
            for name, split in splits.items():
                check_images(split, self._source.image_column, name)

    @property
    def predict_inputs(self) -> list[str]:
        """What the prediction writer prints per row: the image file when there is one, else its row number."""
        split = self._split("predict")
        if self._source.shape is not None:
            return [f"{self.hparams.predict_split}[{i}]" for i in range(len(split))]
        raw = split.cast_column(self._source.image_column, datasets.Image(decode=False))[self._source.image_column]
        return [item.get("path") or f"{self.hparams.predict_split}[{i}]" for i, item in enumerate(raw)]

    # ------------------------------------------------------------------------------- image geometry
    @cached_property
    def _model_preprocessing(self) -> tuple[dict, Any]:
        """The model's ``preprocessor_config.json`` (may be absent) and ``config.json``, read once."""
        from transformers import AutoConfig

        name, key = self.hparams.image_processor, "data.image_processor"
        config = load_pretrained(AutoConfig.from_pretrained, name, key=key)
        return image_processor_config(name, key), config

    @property
    def image_size(self) -> int:
        if self.hparams.image_size:
            return self.hparams.image_size
        if self.hparams.image_processor:
            size = self._model_preprocessing[0].get("size") or {}
            side = (size.get("shortest_edge") or size.get("height")) if isinstance(size, dict) else size
            if side:
                return int(side)
        self._prepare()
        if self._source.shape is not None:
            return self._source.shape[0]
        raise TbxFinetuneError(
            "data.image_size is not set and the model's image processor config states no size; set data.image_size"
        )

    @property
    def num_channels(self) -> int:
        if self.hparams.num_channels:
            return self.hparams.num_channels
        if self.hparams.image_processor:
            return int(getattr(self._model_preprocessing[1], "num_channels", 3))
        self._prepare()
        return self._source.shape[2] if self._source.shape is not None else 3

    # ------------------------------------------------------------------------------- dataloaders
    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str) -> None:
        self._prepare()

    def _dataset(self, name: str) -> Dataset:
        """The split, decoded to uint8 tensors on access (in the loader's workers)."""
        split = self._split(name)
        decode = DecodeImages(self._source.image_column, self._source.shape, self.image_size, self.num_channels)
        return split.with_transform(decode, columns=[self._source.image_column, LABEL_COLUMN])
