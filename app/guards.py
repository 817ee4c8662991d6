"""Stop a fit whose loss stopped being a number, with a message, instead of training on NaN for hours.

Lightning's own tools either cost every step a slow autograd check (``Trainer(detect_anomaly=True)``, for
finding *where* a NaN comes from) or look at a metric only at validation/epoch end (``EarlyStopping``'s
``check_finite``). This callback reads the loss Lightning already returns to ``on_train_batch_end``: one
scalar check per step, agreed across ranks with ``strategy.reduce_boolean_decision`` (the same collective
EarlyStopping uses), so every rank stops at the same step. The error goes through Lightning's exception path:
``on_exception`` and ``logger.finalize("failed")`` run, events and checkpoints written so far stay readable.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from app.errors import TbxFinetuneError


class NonFiniteLossGuard(Callback):
    """Raise our error at the first optimizer step whose training loss is NaN or infinite (on any rank)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none yet"
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # where Lightning logs this batch's train/loss
        raise TbxFinetuneError(
            f"train/loss became {loss.item() if bad else 'non-finite on another rank'} at step {step} "
            f"(epoch {trainer.current_epoch}, batch {batch_idx}); training stopped. Lower "
            "model.init_args.learning_rate, clip gradients (--config configs/trainer/clip.yaml) or use 32-true "
            f"precision; last checkpoint: {ckpt}"
        )
