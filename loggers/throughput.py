"""Throughput in the record: samples and real tokens per second and, where the device's peak is known, the model
FLOPs utilisation, so a run's speed is read beside its curves and compared across runs.

Lightning's ``ThroughputMonitor`` synchronises CUDA after every batch (each step then waits for the GPU) and names
its scalars ``train/*``. This one keeps the token count on the device and reads it once per log step, where the
logger already waits for the device; the time is read after that wait, so it covers the work really done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch import Callback, LightningModule, Trainer

from common.lightning_state import logging_step


class PerfMonitor(Callback):
    """``perf/samples_per_sec``, ``perf/tokens_per_sec`` (text: the attention mask's ones, padding excluded) and
    on GPUs ``perf/mfu`` (training FLOPs ≈ 6 × parameters × tokens, the usual transformer estimate, over the
    device's peak for the run's precision), each over the optimizer steps since the previous log step. Under DDP,
    rank 0's counts times the number of ranks (every rank takes batches of the same size)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        device = trainer.strategy.root_device
        dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
        dtype = torch.float16 if str(trainer.precision).startswith("16") else dtype
        self._peak = get_available_flops(device, dtype) if device.type == "cuda" else None
        self._parameters = sum(p.numel() for p in pl_module.parameters())
        self._step_seen = trainer.global_step
        self._start(device)

    def _start(self, device: torch.device) -> None:
        self._samples = 0
        self._tokens = torch.zeros((), dtype=torch.long, device=device)
        self._has_tokens = False
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if not isinstance(batch, Mapping) or "labels" not in batch:  # (a tokenizer's BatchEncoding is no dict)
            return
        self._samples += len(batch["labels"])
        if "attention_mask" in batch:
            self._tokens += batch["attention_mask"].sum()  # stays on the device: no wait here
            self._has_tokens = True
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if not stepped or trainer.global_step % trainer.log_every_n_steps or not trainer.is_global_zero:
            return
        tokens = int(self._tokens.item()) * trainer.world_size  # waits for the device, once per log step
        seconds = time.perf_counter() - self._t0
        metrics = {"perf/samples_per_sec": self._samples * trainer.world_size / seconds}
        if self._has_tokens:
            metrics["perf/tokens_per_sec"] = tokens / seconds
            if self._peak:
                metrics["perf/mfu"] = 6 * self._parameters * tokens / seconds / (self._peak * trainer.world_size)
        step = logging_step(trainer)  # the step Lightning gives this batch's train/loss
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=step)
        self._start(self._tokens.device)
