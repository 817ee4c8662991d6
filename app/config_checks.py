"""Trainer numbers that would crash or silently misbehave, rejected before anything is built or written.

Data and model numbers are validated by their types where jsonargparse can (``PositiveInt`` batch sizes,
``NonNegativeInt`` workers, ``ClosedUnitInterval`` fractions in ``datamodules``), so the parser rejects them.
The Trainer's signature types these as plain ``int``/``float``; Lightning then fails with a
``ZeroDivisionError`` after the run folder exists (``accumulate_grad_batches: 0``, ``val_check_interval: 0``,
``check_val_every_n_epoch: 0``), raises a traceback once data and model are loaded (``max_epochs: -5``), or
misreads the value in silence (a negative ``gradient_clip_val`` turns clipping off, ``accumulate_grad_batches: -2``
acts as 2). ``FinetuneCLI.before_instantiate_classes`` calls
``check_config`` first, so each is one line naming the key and the fix, before data, model or run folder exist.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from common.errors import TbxFinetuneError

_EPOCHS = "use a positive number of epochs, or -1 for no limit"
_STEPS = "use a positive number of optimizer steps, or -1 for no limit (max_epochs then decides)"


# (key, is it valid, what to do instead), checked for every subcommand: each builds its Trainer from these keys
RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("trainer.max_epochs", lambda v: v is None or v >= -1, _EPOCHS),
    ("trainer.max_steps", lambda v: v >= -1, _STEPS),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, "use 1 (no accumulation) or more batches per step"),
    (
        "trainer.val_check_interval",  # Lightning's forms: a fraction of the epoch, a number of batches, a duration
        lambda v: v is None or isinstance(v, str | dict | timedelta) or (v > 0 and (v <= 1 or v == int(v))),
        "use a fraction of the training epoch in (0, 1], a whole number of batches, or a duration 'DD:HH:MM:SS'",
    ),
    (
        "trainer.check_val_every_n_epoch",
        lambda v: v is None or v >= 1,
        "use a positive number of epochs, or null to count val_check_interval batches across epochs",
    ),
    ("trainer.gradient_clip_val", lambda v: v is None or v >= 0, "use a positive norm, or null for no clipping"),
)

# checked for ``fit`` only: limits that would train nothing and leave an empty run behind
FIT_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("trainer.max_epochs", lambda v: v != 0, _EPOCHS),
    ("trainer.max_steps", lambda v: v != 0, _STEPS),
)


def check_config(subcommand: str, config: Any) -> None:
    """Raise ``TbxFinetuneError`` for the first key of ``config`` (the subcommand's parsed namespace) that
    breaks a rule; keys the namespace does not have are skipped."""
    for key, valid, fix in RULES + (FIT_RULES if subcommand == "fit" else ()):
        if key in config and not valid(config[key]):
            raise TbxFinetuneError(f"{key}={config[key]!r}: {fix}")
