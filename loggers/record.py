"""Writing pictures, text, histograms, PR curves, embeddings and graphs through any TensorBoard-like logger.

Our ``TensorBoardXLogger`` holds a ``tensorboardX.SummaryWriter``; Lightning's stock ``TensorBoardLogger`` holds a
``torch.utils.tensorboard.SummaryWriter`` (tensorboardX's when the ``tensorboard`` package is missing). Both
writers have the same ``add_*`` methods, so ``TensorBoardRecord`` writes through whichever one a logger's
``experiment`` is, by duck typing: one code path for every such logger, and no import of either writer here
(``loggers/tensorboardx.py`` stays the only code that imports tensorboardX). Loggers whose ``experiment`` is
something else (CSV, W&B, MLflow) get no record: the callbacks send them scalars through ``log_metrics`` only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from common.lightning_state import jit_tracing
from loggers.histograms import HistogramStats

WRITER_METHODS = ("add_image", "add_text", "add_histogram_raw", "add_pr_curve_raw", "add_embedding", "add_graph")
"""What a logger's ``experiment`` must have to count as a TensorBoard writer."""


def tensorboard_records(loggers: Iterable[Any]) -> list[TensorBoardRecord]:
    """A record for each logger whose ``experiment`` is a TensorBoard writer, on global rank 0 only.

    Elsewhere the list is empty (the loggers' ``experiment`` is a no-op there), so callers can skip drawing
    what nobody would write.
    """
    if rank_zero_only.rank != 0:
        return []
    writers = [getattr(logger, "experiment", None) for logger in loggers]
    return [TensorBoardRecord(w) for w in writers if all(callable(getattr(w, m, None)) for m in WRITER_METHODS)]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table (``|---|`` rules): TensorBoard's TEXT tab renders it, the report parses label counts back."""
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    return "\n".join(lines + [f"| {' | '.join(map(str, row))} |" for row in rows])


class TensorBoardRecord:
    """The writes the callbacks make, over one SummaryWriter (tensorboardX's or ``torch.utils.tensorboard``'s)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def image(self, tag: str, image: torch.Tensor, step: int, dataformats: str = "CHW") -> None:
        """An image (uint8 0..255 or float 0..1), e.g. a rendered confusion matrix or a grid of inputs."""
        self.writer.add_image(tag, image, global_step=step, dataformats=dataformats)

    def text(self, tag: str, text: str, step: int) -> None:
        """Markdown text (TensorBoard's TEXT tab): alerts, tables of examples."""
        self.writer.add_text(tag, text, global_step=step)

    def histogram(self, tag: str, stats: HistogramStats, step: int) -> None:
        """A histogram already reduced to a few numbers (see ``loggers.histograms``)."""
        if stats.num == 0:  # all values non-finite: nothing TensorBoard could draw
            return
        self.writer.add_histogram_raw(tag, **asdict(stats), global_step=step)

    def pr_curve(self, tag: str, counts: Mapping[str, Sequence[float]], step: int) -> None:
        """A precision-recall curve from per-threshold counts (see ``loggers.visuals.pr_counts``)."""
        self.writer.add_pr_curve_raw(tag, **counts, global_step=step, num_thresholds=len(counts["precision"]))

    def embedding(
        self,
        tag: str,
        features: torch.Tensor,
        metadata: list,
        header: list[str] | None,
        step: int,
        thumbnails: torch.Tensor | None = None,
    ) -> None:
        """Feature vectors for the PROJECTOR tab, one metadata row (e.g. label, prediction) per vector, optionally
        drawn as images (``thumbnails``: NCHW floats in 0..1)."""
        self.writer.add_embedding(
            features, metadata=metadata, label_img=thumbnails, metadata_header=header, global_step=step, tag=tag
        )

    def graph(self, model: torch.nn.Module, input_array: Any) -> None:
        """Trace ``model`` on ``input_array`` into the GRAPHS tab.

        The input goes through the module's batch-transfer hooks first, as a real batch would (device move,
        on-device normalisation); a dict batch is one argument, its tensors become the traced inputs.
        """
        was_training = model.training
        model.eval()  # before the hooks too: an eval batch is not augmented
        try:
            if isinstance(model, LightningModule):  # the public batch-transfer hooks, in Lightning's order
                input_array = model.on_before_batch_transfer(input_array, 0)
                input_array = model.transfer_batch_to_device(input_array, model.device, 0)
                input_array = model.on_after_batch_transfer(input_array, 0)
            inputs = (input_array,) if isinstance(input_array, Mapping) else input_array
            with jit_tracing(), warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                self.writer.add_graph(model, inputs, use_strict_trace=False)
        finally:
            model.train(was_training)
