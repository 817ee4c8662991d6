"""The validation set, seen in TensorBoard: confusion matrix, PR curves, misclassified examples, embeddings,
logit histograms and the model graph — each opt-in, each at most once per validation epoch.

Statistics that describe the whole validation set (confusion matrix, per-class precision and recall, PR
curves, logits, embeddings) are torchmetrics states, so under DDP they are synced across ranks before rank 0
writes them. Misclassified examples are rank 0's share of the validation set (their text or pixels are not
tensors worth gathering). Figures are drawn on Agg figures of their own, never held by pyplot.

This callback only computes. Pictures, curves, histograms, text and embeddings go to every TensorBoard-like
logger (ours, Lightning's ``TensorBoardLogger``) through ``loggers.record``; per-class scalars go to every
logger's ``log_metrics`` (CSV too).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torchmetrics import CatMetric
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassPrecisionRecallCurve,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from common.lightning_state import logging_step
from loggers.histograms import HistogramStats, histogram_summary
from loggers.record import TensorBoardRecord, markdown_table, tensorboard_records

SAMPLE_TAG = "train/augmented_inputs"
"""The IMAGES tag of the grid of augmented training inputs an image model keeps in ``sample_grid``."""
_SNIPPET = 120  # characters of text shown per projector point
_MIN_COUNT = 1e-7  # TensorBoard's pr_curve plugin divides by max(count, 1e-7) too


class ValidationVisuals(Callback):
    """Opt-in pictures of the validation set, written at the end of a validation epoch.

    Args:
        confusion_matrix: An image ``val/confusion_matrix`` and scalars ``val/recall/<class>`` and
            ``val/precision/<class>``.
        pr_curves: One precision-recall curve per class, ``val/pr/<class>`` (one-vs-rest).
        misclassified: Up to this many misclassified validation examples: a text table
            ``val/misclassified`` for text models, an image grid for image models (0: off).
        embeddings: Up to this many validation examples' pooled features (the classification head's
            input) in the projector (0: off), with label, prediction, correct, confidence and the text snippet as
            metadata; image points are drawn as their thumbnails.
        logit_histograms: One histogram of each class's logit, ``val/logits/<class>``.
        graph: The model graph, traced once on two validation examples at the start of fit.
        every_n_epochs: Draw every this many validation epochs.
        pr_thresholds: Thresholds per PR curve (TensorBoard's default is 127).
    """

    def __init__(
        self,
        confusion_matrix: bool = False,
        pr_curves: bool = False,
        misclassified: int = 0,
        embeddings: int = 0,
        logit_histograms: bool = False,
        graph: bool = False,
        every_n_epochs: int = 1,
        pr_thresholds: int = 127,
    ) -> None:
        self.confusion_matrix = confusion_matrix
        self.pr_curves = pr_curves
        self.misclassified = misclassified
        self.embeddings = embeddings
        self.logit_histograms = logit_histograms
        self.graph = graph
        self.every_n_epochs = max(every_n_epochs, 1)
        self.pr_thresholds = pr_thresholds
        self._metrics: nn.ModuleDict | None = None
        self._hook: Any = None
        self._examples: list[tuple[Any, str, str, float]] = []
        self._pending_features: torch.Tensor | None = None
        self._embedded = 0

    # ------------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        num_labels, names = pl_module.num_labels, [str(name) for name in pl_module.label_names]
        metrics: dict[str, nn.Module] = {}
        if self.confusion_matrix:
            metrics["confusion"] = MulticlassConfusionMatrix(num_labels)
            for kind, metric in (("recall", MulticlassRecall), ("precision", MulticlassPrecision)):
                metrics[kind] = ClasswiseWrapper(metric(num_labels, average=None), labels=names, prefix=f"val/{kind}/")
        if self.pr_curves:
            metrics["pr"] = MulticlassPrecisionRecallCurve(num_labels, thresholds=self.pr_thresholds)
        if self.logit_histograms:
            metrics["logits"] = CatMetric()
        if self.embeddings:  # projected: one (label, predicted, confidence) row per point; NaNs kept, rows aligned
            metrics |= {"features": CatMetric(nan_strategy="disable"), "projected": CatMetric(nan_strategy="disable")}
        self._metrics = nn.ModuleDict(metrics).to(pl_module.device)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        records = tensorboard_records(trainer.loggers) if self.graph else []
        if records:
            batch = next(iter(trainer.datamodule.val_dataloader()))
            example = {key: value[:2] for key, value in batch.items() if key != "labels"}
            for record in records:
                record.graph(pl_module, example)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        """A model that keeps a picture of its (augmented) inputs gets it written once, then drops it."""
        sample = getattr(pl_module, "sample_grid", None)  # (step, CHW image)
        if sample is None:
            return
        pl_module.sample_grid = None
        for record in tensorboard_records(trainer.loggers):
            record.image(SAMPLE_TAG, sample[1], sample[0])

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        for metric in self._metrics.values():
            metric.to(pl_module.device).reset()
        self._examples = []
        self._embedded = 0
        self._embedded_inputs: list[Any] = []  # rank 0's: the first rows of the gathered features
        if self.embeddings:  # the module whose input is the pooled feature vector: transformers names it `classifier`
            head = getattr(getattr(pl_module, "model", None), "classifier", None)
            if head is None:
                raise ValueError(f"{type(pl_module).__name__} has no `model.classifier`; embeddings cannot be captured")
            self._hook = head.register_forward_pre_hook(self._capture_features)

    def _capture_features(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        features = inputs[0].detach()
        if features.ndim == 3:  # (batch, tokens, hidden) heads such as RoBERTa's: the first token is pooled
            features = features[:, 0]
        self._pending_features = features.flatten(1).float()

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if not self._active(trainer) or not isinstance(outputs, dict) or "logits" not in outputs:
            return
        logits, labels = outputs["logits"].float(), batch["labels"]
        if self.confusion_matrix:
            for kind in ("confusion", "recall", "precision"):
                self._metrics[kind].update(logits, labels)
        if self.pr_curves:
            self._metrics["pr"].update(logits.softmax(dim=-1), labels)
        if self.logit_histograms:
            self._metrics["logits"].update(logits)
        room = self.embeddings - self._embedded
        if room > 0 and self._pending_features is not None:
            confidence, predicted = logits[:room].softmax(dim=-1).max(dim=-1)
            self._metrics["features"].update(self._pending_features[:room])
            self._metrics["projected"].update(torch.stack([labels[:room].float(), predicted.float(), confidence], 1))
            taken = min(room, len(labels))
            if trainer.is_global_zero:
                self._embedded_inputs += describe_inputs(trainer, batch, list(range(taken)))
            self._embedded += taken
        self._pending_features = None
        if self.misclassified and trainer.is_global_zero and len(self._examples) < self.misclassified:
            self._collect_misclassified(trainer, batch, logits, labels, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        # compute() syncs torchmetrics states across ranks: every rank must call it, rank 0 writes
        self._write(trainer, list(pl_module.label_names), logging_step(trainer))

    # ------------------------------------------------------------------------------------ computation
    def _active(self, trainer: Trainer) -> bool:
        return (
            any((self.confusion_matrix, self.pr_curves, self.misclassified, self.embeddings, self.logit_histograms))
            and self._metrics is not None
            and not trainer.sanity_checking
            and (trainer.current_epoch % self.every_n_epochs == 0)
        )

    def _write(self, trainer: Trainer, names: list[str], step: int) -> None:
        """Per-class scalars to every logger, pictures to every TensorBoard record, in that order.

        Every rank computes (the states sync); figures are rendered only where there is a record (rank 0).
        """
        records = tensorboard_records(trainer.loggers)  # empty off rank 0
        if self.confusion_matrix and self._metrics["confusion"].update_count:
            matrix = self._metrics["confusion"].compute().cpu()
            per_class = self._metrics["recall"].compute() | self._metrics["precision"].compute()
            scalars = {tag: float(value) for tag, value in per_class.items()}  # val/recall/<class>, ...
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(scalars, step=step)
            image = render_confusion_matrix(self._metrics["confusion"], matrix, names) if records else None
            for record in records:
                record.image("val/confusion_matrix", image, step, "HWC")
        if self.pr_curves and self._metrics["pr"].update_count:
            metric = self._metrics["pr"]
            with metric.sync_context(should_sync=True, should_unsync=True):
                confmat = metric.confmat.clone()  # (thresholds, classes, 2, 2): counts at each threshold
            for index, name in enumerate(names):
                counts = pr_counts(confmat[:, index])
                for record in records:
                    record.pr_curve(f"val/pr/{name}", counts, step)
        if self.logit_histograms and self._metrics["logits"].update_count:
            logits = _as_matrix(self._metrics["logits"].compute())
            summaries = torch.stack([histogram_summary(logits[:, c], 64) for c in range(logits.shape[1])]).cpu()
            for name, summary in zip(names, summaries.tolist(), strict=True):
                stats = HistogramStats.from_summary(summary)
                for record in records:
                    record.histogram(f"val/logits/{name}", stats, step)
        if self.embeddings and self._metrics["features"].update_count:
            features = _as_matrix(self._metrics["features"].compute())[: self.embeddings].cpu()
            rows = _as_matrix(self._metrics["projected"].compute())[: self.embeddings].tolist()
            metadata = [[names[int(t)], names[int(p)], str(t == p).lower(), f"{c:.3f}"] for t, p, c in rows]
            header, thumbnails = ["label", "predicted", "correct", "confidence"], None
            inputs = self._embedded_inputs[: len(metadata)]
            if inputs and isinstance(inputs[0], str):  # text: a snippet to read beside each point
                header.append("text")
                snippets = [" ".join(text.split())[:_SNIPPET] for text in inputs]
                metadata = [row + [snippets[i] if i < len(snippets) else ""] for i, row in enumerate(metadata)]
            elif len(inputs) == len(metadata) and all(torch.is_tensor(image) for image in inputs):
                thumbnails = torch.stack(inputs)  # images: each point drawn as its picture
            for record in records:
                record.embedding("val_embeddings", features, metadata, header, step, thumbnails)
        if self.misclassified:
            for record in records:
                _write_examples(record, self._examples, step)

    def _collect_misclassified(self, trainer, batch, logits, labels, pl_module) -> None:
        probabilities, predicted = logits.softmax(dim=-1).max(dim=-1)
        wrong = (predicted != labels).nonzero().flatten()[: self.misclassified - len(self._examples)].tolist()
        if not wrong:
            return
        names = pl_module.label_names
        for row, shown in zip(wrong, describe_inputs(trainer, batch, wrong), strict=True):
            true, guess = names[int(labels[row])], names[int(predicted[row])]
            self._examples.append((shown, true, guess, float(probabilities[row])))


# ------------------------------------------------------------------------------------------- helpers
def describe_inputs(trainer: Trainer, batch: dict[str, torch.Tensor], rows: list[int]) -> list[Any]:
    """What a human should see for some rows of a batch: the text (decoded) or the image (CHW float, 0..1)."""
    tokenizer = getattr(trainer.datamodule, "tokenizer", None)
    if "input_ids" in batch and tokenizer is not None:
        return tokenizer.batch_decode(batch["input_ids"][rows].tolist(), skip_special_tokens=True)
    images = next((v for v in batch.values() if torch.is_tensor(v) and v.ndim == 4), None)
    if images is None:
        return [f"example {row}" for row in rows]
    picked = images[rows].detach().float().cpu()
    low = picked.amin(dim=(1, 2, 3), keepdim=True)
    high = picked.amax(dim=(1, 2, 3), keepdim=True)
    return list((picked - low) / (high - low).clamp_min(1e-8))


def pr_counts(confmat: torch.Tensor) -> dict[str, list[float]]:
    """TensorBoard's raw PR-curve data from torchmetrics' binned one-vs-rest counts ``(thresholds, 2, 2)``."""
    counts = confmat.double().cpu()
    tp, fp, fn, tn = counts[:, 1, 1], counts[:, 0, 1], counts[:, 1, 0], counts[:, 0, 0]
    precision = tp / (tp + fp).clamp_min(_MIN_COUNT)
    recall = tp / (tp + fn).clamp_min(_MIN_COUNT)
    return {
        "true_positive_counts": tp.tolist(),
        "false_positive_counts": fp.tolist(),
        "true_negative_counts": tn.tolist(),
        "false_negative_counts": fn.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def render_confusion_matrix(metric: MulticlassConfusionMatrix, matrix: torch.Tensor, names: list[str]):
    """An RGB image (HWC uint8) of ``matrix`` (``metric``'s computed value), rows = true, columns = predicted.

    Drawn by torchmetrics' own ``plot`` onto axes of a figure of ours: given axes, it creates no pyplot figure
    (called bare, it opens one per call that nobody closes), and the figure grows with the number of classes;
    cell counts are written up to 20 classes, beyond that they would not be readable.
    """
    from matplotlib.figure import Figure

    size = max(4.0, 0.45 * len(names) + 2.0)
    figure = Figure(figsize=(size, size), dpi=100)
    metric.plot(matrix, ax=figure.add_subplot(), add_text=len(names) <= 20, labels=names, cmap="Blues")
    figure.tight_layout()
    return render(figure)


def render_image_grid(images: list[torch.Tensor], titles: list[str]):
    """An RGB image (HWC uint8) of images (CHW, 0..1) in a grid, each titled."""
    from matplotlib.figure import Figure

    columns = min(8, len(images))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), dpi=100)
    for index, (image, title) in enumerate(zip(images, titles, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 1)
        pixels = image.permute(1, 2, 0).numpy()
        axes.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
        axes.set_title(title, fontsize=7)
        axes.axis("off")
    figure.tight_layout()
    return render(figure)


def render(figure):
    """The figure as an RGB image tensor (HWC uint8), drawn on an Agg canvas of its own (no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return torch.from_numpy(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _write_examples(record: TensorBoardRecord, examples: list[tuple[Any, str, str, float]], step: int) -> None:
    if not examples:
        return
    if isinstance(examples[0][0], str):
        rows = [[_cell(text), _cell(t), _cell(p), f"{prob:.3f}"] for text, t, p, prob in examples]
        record.text("val/misclassified", markdown_table(["text", "label", "predicted", "probability"], rows), step)
    else:
        titles = [f"{t} → {p} ({prob:.2f})" for _, t, p, prob in examples]
        record.image("val/misclassified", render_image_grid([e[0] for e in examples], titles), step, "HWC")


def _cell(text: str) -> str:
    """A markdown table cell: pipes escaped, newlines flattened."""
    return text.replace("|", "\\|").replace("\n", " ")


def _as_matrix(values: torch.Tensor) -> torch.Tensor:
    return values if values.ndim == 2 else values.reshape(-1, values.shape[-1])
