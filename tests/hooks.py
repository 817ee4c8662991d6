"""Callbacks that tests put into a real CLI run (``class_path: tests.hooks.<Name>``) to stop it at a known point.

They let a test signal or kill a run at an exact optimizer step instead of guessing with sleeps.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class PauseAtStep(Callback):
    """At optimizer step ``step``, write ``marker`` (the step) and wait to be signalled or killed: after that step's
    training batch (``phase="train"``), or inside the first validation / test batch run at that step.

    The wait ends early when a stop was asked for (SIGTERM or Ctrl-C, noted by ``LastCheckpoint``).
    """

    def __init__(self, step: int, marker: str, phase: str = "train", timeout: float = 120.0) -> None:
        self.step = step
        self.marker = marker
        self.phase = phase
        self.timeout = timeout

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        self._pause(trainer, "train")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if not trainer.sanity_checking:
            self._pause(trainer, "validation")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        self._pause(trainer, "test")

    def _pause(self, trainer: Trainer, phase: str) -> None:
        if phase != self.phase or trainer.global_step != self.step or Path(self.marker).exists():
            return
        Path(self.marker).write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.timeout
        asked = [cb for cb in trainer.callbacks if hasattr(cb, "_signum")]  # LastCheckpoint notes the signal
        while time.monotonic() < deadline and not any(cb._signum for cb in asked) and not trainer.received_sigterm:
            time.sleep(0.05)


class DiskFullFrom(Callback):
    """Checkpoint writes from optimizer step ``step`` on fail with ENOSPC, like a disk filling up mid-run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        checkpoint_io = trainer.strategy.checkpoint_io
        original = checkpoint_io.save_checkpoint

        def save_checkpoint(checkpoint, path, storage_options=None):
            if trainer.global_step >= self.step:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return original(checkpoint, path, storage_options=storage_options)

        checkpoint_io.save_checkpoint = save_checkpoint


class RecordBatches(Callback):
    """Append one line per training batch to ``path``: the epoch and a fingerprint of each example's tokens."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        rows = zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True)
        examples = [hash(tuple(t for t, keep in zip(ids, mask, strict=True) if keep)) for ids, mask in rows]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{trainer.current_epoch} {' '.join(map(str, examples))}\n")
