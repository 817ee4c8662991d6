"""Text classification data over ``datasets``: hub name or local files, tokenised once and cached on disk.

The raw data is loaded and validated when the CLI first asks for ``num_labels`` (at instantiation, before
the Trainer exists), so a wrong column or label fails in seconds, not after the model has loaded.
"""

from __future__ import annotations

from functools import cached_property

import datasets
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch.utils.data import Dataset, Sampler
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from common.assets import load_pretrained
from common.errors import TbxFinetuneError
from datamodules.base import STAGE_SPLITS, ClassificationDataModule
from datamodules.length_grouped import LengthGroupedSampler, LengthSortedSampler, token_lengths
from datamodules.sources import load_splits
from datamodules.splits import LABEL_COLUMN


class TextDataModule(ClassificationDataModule):
    """Tokenised text classification splits with dynamic padding.

    Args:
        dataset: Hub dataset name, or a ``datasets`` builder (``csv``, ``json``, ``parquet``) for local files.
        data_files: Local files: one path (the train split) or ``{split: path}``; ``pkg://package/path``
            names a file shipped inside an installed package.
        dataset_config: The hub dataset's configuration name, if it has several.
        text_column: Column holding the text.
        label_column: Column holding the label (strings or ``ClassLabel`` ids).
        labels: The classes, in id order. Rows with other labels are dropped from every split. ``None``:
            ``ClassLabel`` names or the sorted distinct train labels.
        tokenizer: Tokenizer name or folder; the CLI links it to ``model.model_name_or_path``.
        max_length: Longest sequence in tokens (longer texts are truncated).
        batch_size: Training batch size per device.
        eval_batch_size: Validation/test/predict batch size (defaults to ``2 * batch_size``).
        val_fraction: Share of train held out as validation when the data has no validation split.
        test_fraction: Share of train held out as test when the data has no test split.
        max_samples: Cap on rows per split (``int`` for all, or ``{train: n, val: n, test: n}``), seeded.
        predict_split: Which split ``predict`` runs on.
        num_workers: DataLoader worker processes.
        seed: Seed for the held-out splits and subsampling (independent of the training seed).
        trust_remote_code: Let a tokenizer folder or hub repo run its own Python code; off unless set (like
            ``model.init_args.trust_remote_code``, which does not turn this on).
        group_by_length: Train on batches of similar lengths (HF Trainer's ``group_by_length``): shuffle, then sort
            by token count inside mega-batches of up to 50 batches, so each batch pads little. A new order every
            epoch, fixed by the training seed; resumable mid-epoch; sharded per rank under DDP. ``false``: plain
            shuffle (a run made before this was the default resumes with ``false``).
        sort_eval_by_length: Validate and test longest texts first, so those batches pad little too (the metrics do
            not depend on the order). Off by default: the visuals that show the first validation examples
            (``visuals.embeddings``, ``visuals.misclassified``) would then show the longest ones.
        pad_to_multiple_of: Pad each batch to a multiple of this many tokens (8 suits tensor cores; 32 or 64 keep
            the number of distinct shapes small for ``model.init_args.compile``). ``None``: to the longest text.
    """

    def __init__(
        self,
        dataset: str | None = None,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        dataset_config: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        labels: list[str] | None = None,
        tokenizer: str | None = None,
        max_length: PositiveInt = 128,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt | None = None,
        val_fraction: ClosedUnitInterval = 0.1,
        test_fraction: ClosedUnitInterval = 0.1,
        max_samples: PositiveInt | dict[str, PositiveInt] | None = None,
        predict_split: str = "test",
        num_workers: NonNegativeInt = 0,
        seed: int = 42,
        trust_remote_code: bool = False,
        group_by_length: bool = True,
        sort_eval_by_length: bool = False,
        pad_to_multiple_of: PositiveInt | None = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.tokenized: dict[str, datasets.Dataset] = {}

    # ------------------------------------------------------------------------- raw data and labels
    def _load(self) -> tuple[datasets.DatasetDict, str, list[str]]:
        hp = self.hparams
        return load_splits(hp.dataset, hp.data_files, hp.dataset_config), hp.label_column, [hp.text_column]

    def _check(self, splits: dict[str, datasets.Dataset]) -> None:
        column = self.hparams.text_column
        for name, split in splits.items():
            feature = split.features[column]
            if not isinstance(feature, datasets.Value) or "string" not in str(feature.dtype):
                raise TbxFinetuneError(
                    f"{name} split: column {column!r} holds {feature}, not text; "
                    "set data.text_column to the column with the text"
                )

    @property
    def predict_inputs(self) -> list[str]:
        """The raw texts ``predict`` runs on, in dataset order (the prediction writer prints them)."""
        return self._split("predict")[self.hparams.text_column]

    # ------------------------------------------------------------------------------- tokenisation
    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if not self.hparams.tokenizer:
            raise TbxFinetuneError("data.tokenizer is not set (the CLI links it to model.model_name_or_path)")
        return load_pretrained(
            AutoTokenizer.from_pretrained,
            self.hparams.tokenizer,
            key="data.tokenizer",
            trust_remote_code=self.hparams.trust_remote_code,
        )

    def _tokenize(self, split: datasets.Dataset) -> datasets.Dataset:
        """Batched, cached by ``datasets`` (fingerprinted on data, tokenizer and max_length)."""
        column, max_length, tokenizer = self.hparams.text_column, self.hparams.max_length, self.tokenizer

        def tokenize(batch: dict) -> dict:
            texts = [text if text is not None else "" for text in batch[column]]
            return tokenizer(texts, truncation=True, max_length=max_length)

        drop = [c for c in split.column_names if c != LABEL_COLUMN]
        return split.map(tokenize, batched=True, remove_columns=drop, desc="tokenize")

    def prepare_data(self) -> None:
        """Runs once per node before ``setup``: fill the ``datasets`` cache so other ranks only read it."""
        self._prepare()
        for split in self._splits.values():
            self._tokenize(split)

    def setup(self, stage: str) -> None:
        for name in STAGE_SPLITS[stage]:
            if name not in self.tokenized:
                self.tokenized[name] = self._tokenize(self._split(name))

    # ------------------------------------------------------------------------------- dataloaders
    def _dataset(self, name: str) -> Dataset:
        return self.tokenized[name]

    def _collate(self) -> DataCollatorWithPadding:
        # dynamic padding per batch
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.hparams.pad_to_multiple_of)

    def _train_sampler(self) -> Sampler | None:
        if not self.hparams.group_by_length:
            return super()._train_sampler()
        # (number of ranks, this rank) of the attached Trainer; (1, 0) without one
        num_replicas, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        lengths = token_lengths(self.tokenized["train"])
        return LengthGroupedSampler(lengths, self.hparams.batch_size * num_replicas, num_replicas, rank)

    def _eval_sampler(self, name: str) -> LengthSortedSampler | None:
        return LengthSortedSampler(token_lengths(self.tokenized[name])) if self.hparams.sort_eval_by_length else None
