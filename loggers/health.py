"""Training health, in one place: the alert rules over gradient statistics (non-finite, exploding, vanishing,
dead layers) and the guard that stops a run whose loss or gradients are no longer numbers.

``TrainingHealth`` is pure host-side logic on a few numbers per log step (the statistics are already on the
host), cheap and testable without a model; the gradient monitor feeds it and routes its alerts to the record.

``NonFiniteGuard`` reads the loss Lightning already returns to ``on_train_batch_end`` (one scalar check per
step, agreed across ranks with ``strategy.reduce_boolean_decision``, the collective EarlyStopping uses) and,
opt-in, the gradients in ``on_before_optimizer_step`` (unscaled under AMP, all-reduced under DDP, so every
rank sees the same verdict without communicating). Lightning's own tools either cost every step a slow
autograd check (``detect_anomaly``) or look at a metric only at validation end (``EarlyStopping``'s
``check_finite``). The guard writes a ``health/nonfinite`` alert into the record, then raises our error
through Lightning's exception path, so ``logger.finalize("failed")`` runs and what was written stays readable.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from common.errors import TbxFinetuneError
from common.lightning_state import logging_step
from loggers.record import tensorboard_records

NONFINITE_TAG = "health/nonfinite"


@dataclass(frozen=True)
class Alert:
    kind: str  # "nonfinite", "exploding", "vanishing", "dead"
    message: str


@dataclass
class TrainingHealth:
    """Stateful checks, fed once per gradient log step.

    Args:
        explode_factor: Alert when the total norm exceeds this multiple of its running median.
        window: Log steps in the running median.
        min_history: Log steps needed before the exploding rule can fire (early steps are noisy).
        vanish_threshold: A layer whose gradient norm is at or below this counts as vanishing.
        dead_patience: Consecutive vanishing log steps after which a layer is reported dead (once).
    """

    explode_factor: float = 10.0
    window: int = 50
    min_history: int = 5
    vanish_threshold: float = 1e-8
    dead_patience: int = 3
    _history: deque = field(init=False, repr=False)
    _vanishing_for: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._history = deque(maxlen=self.window)

    def check(self, total_norm: float, nonfinite: int, layer_norms: dict[str, float]) -> list[Alert]:
        alerts = []
        if nonfinite:
            alerts.append(Alert("nonfinite", f"{nonfinite} parameter(s) have non-finite gradients (NaN/inf)"))
        if math.isfinite(total_norm):
            median = statistics.median(self._history) if len(self._history) >= self.min_history else 0.0
            if median > 0 and total_norm > self.explode_factor * median:
                ratio = f"{total_norm / median:.1f}x its running median {median:.4g}"
                alerts.append(
                    Alert("exploding", f"gradient norm {total_norm:.4g} is {ratio} (threshold {self.explode_factor}x)")
                )
            self._history.append(total_norm)
        for layer, norm in layer_norms.items():
            if math.isfinite(norm) and norm <= self.vanish_threshold:
                count = self._vanishing_for[layer] = self._vanishing_for.get(layer, 0) + 1
                if count == 1:
                    alerts.append(
                        Alert("vanishing", f"layer {layer}: gradient norm {norm:.3g} ≤ {self.vanish_threshold:g}")
                    )
                if count == self.dead_patience:
                    alerts.append(Alert("dead", f"layer {layer}: no gradient for {count} consecutive log steps"))
            else:
                self._vanishing_for.pop(layer, None)
        return alerts


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every value of every tensor is finite: one fused norm per tensor, one host sync."""
    tensors = [t.detach() for t in tensors]
    return not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


class NonFiniteGuard(Callback):
    """Stop training with one clear error at the first NaN/inf training loss or (opt-in) gradient.

    Args:
        gradients: Also check every optimizer step's gradients (one fused norm over all of them per step); not
            with 16-mixed precision, whose grad scaler skips such steps by design.
    """

    def __init__(self, gradients: bool = False) -> None:
        self.gradients = gradients

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.gradients and getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise TbxFinetuneError(
                "nonfinite.gradients=true with 16-mixed precision: its grad scaler makes non-finite gradients on "
                "purpose and skips those steps; drop nonfinite.gradients (a NaN loss still stops the run)"
            )

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = not all_finite([loss])
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            shown = loss.item() if bad else "non-finite on another rank"
            # the step Lightning gives this batch's train/loss
            self._stop(trainer, f"train/loss became {shown}", logging_step(trainer), batch_idx)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if not self.gradients:
            return
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if named and not all_finite([g for _, g in named]):
            first = next(n for n, g in named if not all_finite([g]))
            self._stop(trainer, f"gradient of {first} became non-finite", trainer.global_step, None)

    def _stop(self, trainer: Trainer, what: str, step: int, batch_idx: int | None) -> None:
        for record in tensorboard_records(trainer.loggers):  # TensorBoard-like loggers, rank 0
            record.text(NONFINITE_TAG, f"step {step}: {what}; training stopped", step)
        where = f"epoch {trainer.current_epoch}" + (f", batch {batch_idx}" if batch_idx is not None else "")
        ckpt = next((cb.last_model_path for cb in trainer.checkpoint_callbacks if cb.last_model_path), "none yet")
        raise TbxFinetuneError(
            f"{what} at step {step} ({where}); training stopped. Lower model.init_args.learning_rate, clip "
            "gradients (--config configs/trainer/clip.yaml) or use 32-true precision; last checkpoint: "
            f"{ckpt}"
        )
