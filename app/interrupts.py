"""Ctrl-C and SIGTERM stop training at a batch boundary, save ``last.ckpt`` and close the events file.

What Lightning 2.6 does by itself: SIGTERM sets a flag and the training loop raises ``SIGTERMException`` at
the next batch boundary (a clean point: the optimizer step is done and counted; under DDP rank 0 broadcasts
the flag so every rank stops at the same batch); SIGINT raises ``KeyboardInterrupt`` wherever the process
is, possibly mid-step. Both then run the callbacks' ``on_exception`` and ``logger.finalize("failed")``
(events closed, session end recorded), but neither saves a checkpoint, ``SIGTERMException`` exits with status
0, and a checkpoint taken mid-step would resume one logged step off.

So this callback sends the first Ctrl-C down Lightning's SIGTERM path (a second Ctrl-C interrupts at once, as
usual), saves ``last.ckpt`` beside ModelCheckpoint's in ``on_exception``, and makes the process exit with
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). ``fit --ckpt_path last`` then continues the run.

One Lightning detail: a checkpoint whose batch counters say "the last batch finished" is read as one saved by
ModelCheckpoint at validation end, *before* the loop counted the step for the loggers; when validation did
run on that batch, the restored loop adds that count itself. Our checkpoint is taken after the count, so in
that case it stores the count minus one, and the resumed run logs its first point at the checkpoint's step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from app.checkpoints import LAST_FILE


class InterruptCheckpoint(Callback):
    """On SIGINT/SIGTERM during ``fit``: stop after the current batch and save ``checkpoints/last.ckpt``."""

    def __init__(self) -> None:
        self._signum: int | None = None
        self._previous_sigint: signal.Handlers | None = None
        self._validated_at: int | None = None
        self._saving = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning registers its SIGTERM handler just before this hook; signals can only be set in the main thread
        self._signum = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is not None:  # pressed twice: stop now, the usual way
            raise KeyboardInterrupt
        self._signum = signum
        print("\nCtrl-C: stopping after this batch, saving last.ckpt (press again to stop at once)", file=sys.stderr)
        lightning_handler = signal.getsignal(signal.SIGTERM)
        if callable(lightning_handler):
            lightning_handler(signum, frame)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_at = trainer.global_step

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        if self._saving and self._validated_at == trainer.global_step:  # validation ran after the last step
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_sigint()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return  # a bug or a second Ctrl-C mid-step: keep the last periodic checkpoint rather than a torn state
        signum = self._signum or signal.SIGTERM
        exception.code = 128 + signum  # SIGTERMException is a SystemExit: this becomes the exit status
        checkpoint = trainer.checkpoint_callback
        dirpath = getattr(checkpoint, "dirpath", None)
        if not dirpath:
            return
        path = os.path.join(dirpath, LAST_FILE)
        self._saving = True
        try:
            trainer.save_checkpoint(path, weights_only=False)  # all ranks stop at the same batch: the barrier is met
        finally:
            self._saving = False
        if trainer.is_global_zero:
            print(
                f"tbx-finetune: stopped by {signal.Signals(signum).name} at step {trainer.global_step}; saved {path}. "
                "Continue the run with the same command plus --ckpt_path last",
                file=sys.stderr,
            )

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
