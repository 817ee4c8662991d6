"""Writes ``predict`` results as CSV: input, predicted label name and its probability, one row per example."""

from __future__ import annotations

import csv
import os
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Collects each rank's predictions and writes them once the predict epoch ends.

    Args:
        output_path: CSV file to write. ``None``: ``predictions.csv`` in the run directory. Under DDP each
            rank writes ``<stem>.rank<N>.csv`` (rows carry the dataset index, so they can be merged).
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self._rows: list[tuple[int, int, float]] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: list[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        label_ids = prediction["label_ids"].tolist()
        probabilities = prediction["probabilities"].float().tolist()
        indices = batch_indices if batch_indices is not None else range(len(label_ids))
        self._rows.extend(zip(indices, label_ids, probabilities, strict=True))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self._path(trainer)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        inputs = getattr(trainer.datamodule, "predict_inputs", None)
        names = pl_module.label_names
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["index", "input", "label", "probability"])
            for index, label_id, probability in sorted(self._rows):
                shown = inputs[index] if inputs is not None else ""
                out.writerow([index, shown, names[label_id], f"{probability:.6f}"])
        print(f"wrote {len(self._rows)} predictions to {path}")

    def _path(self, trainer: Trainer) -> str:
        path = self.output_path
        if path is None:
            base = getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir
            path = os.path.join(base, "predictions.csv")
        if trainer.world_size > 1:
            stem, ext = os.path.splitext(path)
            path = f"{stem}.rank{trainer.global_rank}{ext}"
        return path
