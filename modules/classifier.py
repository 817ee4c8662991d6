"""The training logic every classifier shares: steps, metrics, optimizer and schedule.

Subclasses only say how to build the network and how to call it on a batch (``forward`` returning logits),
so text and image fine-tuning log the same tags (``train/loss``, ``val/acc``, ``val/f1``, …) and use the same
optimizer recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup

STAGES = ("train", "val", "test")
_NO_DECAY = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.Embedding)


class ClassificationModule(LightningModule):
    """Cross-entropy classification with accuracy and macro-F1 per stage, AdamW and linear warmup.

    Args:
        num_labels: Number of classes (linked from the datamodule by the CLI).
        label_names: Class names in label-id order (linked from the datamodule); used for predictions.
        learning_rate: Peak learning rate reached after warmup.
        weight_decay: AdamW decoupled weight decay, applied to weight matrices only.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from 0.
    """

    def __init__(
        self,
        num_labels: int = 2,
        label_names: list[str] | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=num_labels, average="micro"),
                "f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
            }
        )
        # keyed "<stage>_metrics": a ModuleDict key "train" would shadow nn.Module.train()
        self.metrics = nn.ModuleDict({f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES})

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return logits of shape ``(batch, num_labels)``."""
        raise NotImplementedError

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        logits = self(batch)
        loss = nn.functional.cross_entropy(logits, labels)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), labels)
        on_step = stage == "train"
        # sync_dist: under DDP every logged loss is the mean over all ranks' batches (the global batch), not
        # rank 0's share; one scalar all-reduce per step. Accuracy/F1 are torchmetrics, synced by themselves.
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=True,
            sync_dist=True,
            batch_size=labels.shape[0],
        )
        if stage != "train":  # training metrics are logged once per epoch, not touched on every step
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.metrics["train_metrics"], on_step=False, on_epoch=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._shared_step(batch, "val")
        return {"loss": loss, "logits": logits.detach()}  # callbacks (loggers.visuals) draw from the logits

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._shared_step(batch, "test")
        return {"loss": loss, "logits": logits.detach()}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        probs = self(batch).softmax(dim=-1)
        confidence, label_ids = probs.max(dim=-1)
        return {"label_ids": label_ids, "probabilities": confidence}

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over two groups (decay / no decay) and a linear warmup-then-decay schedule per step.

        Biases and normalisation/embedding weights are excluded from weight decay, as in BERT's recipe;
        the schedule's length comes from Lightning so accumulation, epochs and max_steps are all honoured.
        """
        decay, no_decay = [], []
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                (no_decay if name == "bias" or isinstance(module, _NO_DECAY) else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay, "name": "decay"},
                {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
            ],
            lr=self.learning_rate,
        )
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, num_warmup_steps=int(self.warmup_ratio * total_steps), num_training_steps=total_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
