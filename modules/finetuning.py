"""Staged fine-tuning: train only the new head for a few epochs, then unfreeze the pretrained backbone.

A Lightning ``BaseFinetuning`` callback (the module returns it from ``configure_callbacks``, so one model
key, ``freeze_backbone_epochs``, configures it). Frozen parameters stay out of the optimizer; at the unfreeze
epoch they join it as two groups (``backbone_decay`` / ``backbone_no_decay``, the same weight-decay rule as
the head) at ``backbone_lr_factor`` times the head's learning rate, and the warmup/decay schedule is
extended to them, so the backbone follows the same schedule from where it stands.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from modules.classifier import _NO_DECAY


class StagedUnfreeze(BaseFinetuning):
    """Freeze ``pl_module.backbone`` (BatchNorm included) until ``unfreeze_at_epoch``.

    Args:
        unfreeze_at_epoch: First epoch (0-based) in which the backbone trains.
        backbone_lr_factor: Backbone learning rate as a fraction of the head's.
    """

    def __init__(self, unfreeze_at_epoch: int, backbone_lr_factor: float = 0.1) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_factor = backbone_lr_factor

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module: LightningModule, current_epoch: int, optimizer: Optimizer) -> None:
        if current_epoch != self.unfreeze_at_epoch:
            return
        backbone = pl_module.backbone
        self.make_trainable(backbone)
        decay, no_decay = [], []
        for module in backbone.modules():
            for name, param in module.named_parameters(recurse=False):
                (no_decay if name == "bias" or isinstance(module, _NO_DECAY) else decay).append(param)
        base_lr = pl_module.learning_rate * self.backbone_lr_factor
        scheduler = _step_scheduler(pl_module)
        for group_name, params, weight_decay in (
            ("backbone_decay", decay, pl_module.weight_decay),
            ("backbone_no_decay", no_decay, 0.0),
        ):
            params = self.filter_on_optimizer(optimizer, params)
            if not params:
                continue
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch) if scheduler is not None else 1.0
            optimizer.add_param_group(
                {
                    "params": params,
                    "name": group_name,
                    "weight_decay": weight_decay,
                    "lr": base_lr * factor,
                    "initial_lr": base_lr,
                }
            )
            if scheduler is not None:
                scheduler.base_lrs.append(base_lr)
                scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])


def _step_scheduler(pl_module: LightningModule) -> nn.Module | None:
    """The module's LambdaLR schedule (``ClassificationModule.configure_optimizers``), if there is one."""
    configs = pl_module.trainer.lr_scheduler_configs
    scheduler = configs[0].scheduler if configs else None
    return scheduler if hasattr(scheduler, "lr_lambdas") else None
