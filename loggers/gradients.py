"""Gradient norms per parameter and per layer, histograms and health alerts, cheap enough to leave on.

Computed in ``on_before_optimizer_step``: there gradients are already unscaled under AMP and all-reduced
under DDP, and the hook runs once per optimizer step whatever the accumulation. Everything is reduced on the
device (``torch._foreach_norm``, ``index_add_`` per layer, histogram summaries), stacked into one tensor
and copied to the host once per log step. On CUDA that copy is asynchronous: it goes into pinned memory behind a
CUDA event, and the numbers are written when the event has passed (normally at the next optimizer step), at the
latest at the next log step, a checkpoint or the end of training, so the step never waits for the GPU and no point
is lost. Only global rank 0 computes and writes. Stopping on non-finite
gradients is ``loggers.health.NonFiniteGuard``'s job (``--nonfinite.gradients true``).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from loggers.health import TrainingHealth
from loggers.histograms import HEADER, HistogramStats, histogram_summary
from loggers.record import tensorboard_records

log = logging.getLogger(__name__)


def layer_of(name: str, depth: int | None = None) -> str:
    """Group a parameter name into a layer: ``model.bert.encoder.layer.3.attention.self.query.weight`` →
    ``bert.encoder.layer.3``.

    With ``depth`` the first ``depth`` module names are kept; by default, modules up to the first numeric
    index (a repeated block), or at most two, so embeddings, each block, pooler and head are one layer.
    """
    parts = name.split(".")[:-1]  # drop the parameter's own name (weight, bias)
    if parts and parts[0] == "model":
        parts = parts[1:]
    if depth is None:
        numeric = next((i for i, part in enumerate(parts) if part.isdecimal()), None)
        depth = numeric + 1 if numeric is not None else 2
    return ".".join(parts[:depth]) or name


class GradNormMonitor(Callback):
    """Logs ``grad_norm/total``, ``grad_norm/<layer>``, ``grad_norm/nonfinite`` and ``grad_norm/per_param``.

    Args:
        every_n_steps: Log every this many optimizer steps (the step index is the optimizer step); 0 turns
            the monitor off.
        norm_type: The p of the p-norm (2.0: Euclidean; ``inf``: max abs).
        group_depth: Module names kept when grouping parameters into layers (``None``: automatic).
        bins: Buckets per histogram.
        gradient_histograms: Also write a histogram of gradient values per layer (``grad/<layer>``).
        weight_histograms: Also write a histogram of weight values per layer (``weight/<layer>``).
        explode_factor, vanish_threshold, dead_patience: Health-alert thresholds (see ``TrainingHealth``).
        deferred_copy: Copy the statistics to the host without waiting and write them once the copy has landed
            (same values, same steps, written a step later). ``None``: on CUDA only, where a blocking copy would
            stall the step until the GPU catches up; elsewhere the copy is immediate.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        norm_type: float = 2.0,
        group_depth: int | None = None,
        bins: int = 64,
        gradient_histograms: bool = False,
        weight_histograms: bool = False,
        explode_factor: float = 10.0,
        vanish_threshold: float = 1e-8,
        dead_patience: int = 3,
        deferred_copy: bool | None = None,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"GradNormMonitor.every_n_steps must be ≥ 0 (0: off), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.norm_type = float(norm_type)
        self.group_depth = group_depth
        self.bins = bins
        self.gradient_histograms = gradient_histograms
        self.weight_histograms = weight_histograms
        self.health = TrainingHealth(
            explode_factor=explode_factor, vanish_threshold=vanish_threshold, dead_patience=dead_patience
        )
        self.alerts_fired = 0
        self.deferred_copy = deferred_copy
        self._groups: tuple | None = None
        self._pending: _PendingStats | None = None

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        self._flush(trainer, wait=False)  # the last log step's numbers, if their copy has landed
        step = trainer.global_step
        if self.every_n_steps == 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        named = [(n, p) for n, p in pl_module.named_parameters() if p.grad is not None]
        if named:
            self._log_step(trainer, named, step)

    def _log_step(self, trainer: Trainer, named: list[tuple[str, torch.nn.Parameter]], step: int) -> None:
        grads = [p.grad for _, p in named]
        device = grads[0].device
        layers, layer_names, layer_ids = self._grouping(tuple(n for n, _ in named), device)

        norms = torch.stack(torch._foreach_norm(grads, self.norm_type)).float()
        finite = torch.isfinite(norms)
        per_layer = torch.zeros(len(layer_names), device=device)
        if math.isinf(self.norm_type):
            per_layer.index_reduce_(0, layer_ids, norms, "amax", include_self=False)
            total = norms.max()
        else:
            powered = norms.pow(self.norm_type)
            per_layer = per_layer.index_add_(0, layer_ids, powered).pow(1.0 / self.norm_type)
            total = powered.sum().pow(1.0 / self.norm_type)
        parts = [total.reshape(1), (~finite).sum().float().reshape(1), per_layer, histogram_summary(norms, self.bins)]
        histogram_tags = ["grad_norm/per_param"]
        kinds = [kind for kind, on in (("grad", self.gradient_histograms), ("weight", self.weight_histograms)) if on]
        for kind, layer in itertools.product(kinds, layer_names):
            tensors = [
                (p.grad if kind == "grad" else p) for (_, p), lyr in zip(named, layers, strict=True) if lyr == layer
            ]
            parts.append(histogram_summary(torch.cat([t.detach().flatten() for t in tensors]), self.bins))
            histogram_tags.append(f"{kind}/{layer}")

        stats = torch.cat(parts)
        deferred = self.deferred_copy if self.deferred_copy is not None else stats.is_cuda
        if not deferred:  # the one device→host copy of this step
            self._write_stats(trainer, step, stats.cpu().tolist(), layer_names, histogram_tags)
            return
        self._flush(trainer, wait=True)  # at most one copy in flight; one log step old, it has long landed
        self._pending = _PendingStats.start(stats, step, layer_names, histogram_tags)

    def _flush(self, trainer: Trainer, wait: bool) -> None:
        """Write the pending statistics if their copy has landed (``wait``: once it has)."""
        pending = self._pending
        if pending is None or not (wait or pending.ready()):
            return
        self._pending = None
        self._write_stats(trainer, pending.step, pending.values(), pending.layer_names, pending.histogram_tags)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self._flush(trainer, wait=True)  # the record on disk then holds every step the checkpoint has trained

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer, wait=True)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        step = self._pending.step if self._pending is not None else None
        try:  # best effort: the run's own error is the one to report, not a failed write of the last point
            self._flush(trainer, wait=True)
        except Exception as err:  # noqa: BLE001
            log.warning("gradient norms of step %s not written: %s", step, err)
            self._pending = None

    def _grouping(self, names: tuple[str, ...], device: torch.device) -> tuple[list[str], list[str], torch.Tensor]:
        """Each parameter's layer, the layers in order, and a layer-index tensor; cached while the set of
        parameters with gradients stays the same (it changes only when layers are frozen or unfrozen)."""
        if self._groups is None or self._groups[0] != (names, device):
            layers = [layer_of(n, self.group_depth) for n in names]
            layer_names = list(dict.fromkeys(layers))
            ids = torch.tensor([layer_names.index(layer) for layer in layers], device=device)
            self._groups = ((names, device), (layers, layer_names, ids))
        return self._groups[1]

    def _write_stats(
        self, trainer: Trainer, step: int, host: list[float], layer_names: list[str], histogram_tags: list[str]
    ) -> None:
        """Write one log step's statistics (the host copy of ``_log_step``'s tensor) and its health alerts."""
        total_norm, nonfinite = host[0], int(host[1])
        layer_norms = dict(zip(layer_names, host[2 : 2 + len(layer_names)], strict=True))
        summaries, size = host[2 + len(layer_names) :], HEADER + self.bins
        alerts = self.health.check(total_norm, nonfinite, layer_norms)
        scalars = {"grad_norm/total": total_norm, "grad_norm/nonfinite": float(nonfinite)}
        scalars |= {f"grad_norm/{layer}": norm for layer, norm in layer_norms.items()}
        scalars["health/alerts"] = float(len(alerts))
        self.alerts_fired += len(alerts)
        for alert in alerts:
            log.warning("training health [step %d] %s: %s", step, alert.kind, alert.message)
        for logger in trainer.loggers:  # every logger gets the scalars, TensorBoard-like ones the rest
            logger.log_metrics({k: v for k, v in scalars.items() if math.isfinite(v)}, step=step)
        for record in tensorboard_records(trainer.loggers):
            for i, tag in enumerate(histogram_tags):
                record.histogram(tag, HistogramStats.from_summary(summaries[i * size : (i + 1) * size]), step)
            for alert in alerts:
                record.text(f"health/{alert.kind}", f"step {step}: {alert.message}", step)


@dataclass
class _PendingStats:
    """One log step's statistics on their way to the host: a pinned buffer filled asynchronously behind a CUDA
    event (torch has no future for a tensor copy; an event is how CUDA says a queued copy is done)."""

    step: int
    layer_names: list[str]
    histogram_tags: list[str]
    host: torch.Tensor
    event: torch.cuda.Event | None

    @classmethod
    def start(cls, stats: torch.Tensor, step: int, layer_names: list[str], histogram_tags: list[str]) -> _PendingStats:
        if stats.is_cuda:
            host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            host.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:  # nothing to wait for off CUDA; the deferral itself runs the same way (and is tested on CPU)
            host, event = stats.detach().clone(), None
        return cls(step, list(layer_names), list(histogram_tags), host, event)

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def values(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()
