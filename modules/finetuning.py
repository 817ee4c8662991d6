"""Staged fine-tuning: train only the new head for a few epochs, then unfreeze the pretrained backbone.

A Lightning ``BaseFinetuning`` callback (the module returns it from ``configure_callbacks``, so one model
key, ``freeze_backbone_epochs``, configures it). The backbone's parameters are in the optimizer from the
first step, in their own groups at ``backbone_lr_factor`` times the head's rate
(``ImageClassifier.parameter_groups``); while frozen they have no gradient, and torch optimizers skip a
parameter without one (no update, no weight decay). Unfreezing only turns their gradients on: the optimizer and
its schedule never change shape, so nothing of them is patched, and a run resumes from any checkpoint, before
or after the unfreeze, with the optimizer state Lightning saved.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer


class StagedUnfreeze(BaseFinetuning):
    """Freeze ``pl_module.backbone`` (BatchNorm statistics included) until epoch ``unfreeze_at_epoch``.

    Args:
        unfreeze_at_epoch: First epoch (0-based) in which the backbone trains.
    """

    def __init__(self, unfreeze_at_epoch: int) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module: LightningModule, current_epoch: int, optimizer: Optimizer) -> None:
        # ">=": a run resumed after the unfreeze epoch starts frozen again (setup freezes) and must thaw at once
        if current_epoch >= self.unfreeze_at_epoch:
            self.make_trainable(pl_module.backbone)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore: BaseFinetuning keeps param groups it added, and this callback adds none."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore. (A checkpoint of this project before the groups existed from the start has fewer
        optimizer groups than the model now builds: Lightning refuses to load its optimizer state.)"""
