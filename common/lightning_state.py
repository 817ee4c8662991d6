"""The two pieces of Lightning's private loop state this project reads, behind one wrapper that fails loudly.

Lightning gives logged metrics the fit loop's count of batches that stepped the optimizer
(``fit_loop.epoch_loop._batches_that_stepped``), not ``global_step``; pictures and alerts must carry the same
step to line up with ``val/*`` scalars, and a checkpoint saved on an interrupt must store that count as the
restored loop expects it. No public name exists (Lightning 2.6). If an upgrade moves it, these functions raise
instead of returning a wrong step, and ``tests/test_architecture.py`` fails on the upgrade.
"""

from __future__ import annotations

from typing import Any

_ATTRIBUTE = "_batches_that_stepped"
_CHECKPOINT_PATH = ("loops", "fit_loop", "epoch_loop.state_dict", _ATTRIBUTE)


def logging_step(trainer: Any) -> int:
    """The step Lightning's logger connector gives the metrics logged now (``self.log`` → logger)."""
    epoch_loop = trainer.fit_loop.epoch_loop
    if not hasattr(epoch_loop, _ATTRIBUTE):
        raise RuntimeError(
            f"this Lightning version has no fit_loop.epoch_loop.{_ATTRIBUTE}: common/lightning_state.py must learn "
            "where Lightning now keeps the step it logs metrics at"
        )
    return int(getattr(epoch_loop, _ATTRIBUTE))


def shift_checkpoint_logging_step(checkpoint: dict, delta: int) -> None:
    """Add ``delta`` to the logging step a Lightning checkpoint dict restores."""
    node: Any = checkpoint
    for key in _CHECKPOINT_PATH[:-1]:
        if not isinstance(node, dict) or key not in node:
            raise RuntimeError(f"this Lightning version's checkpoints have no {'/'.join(_CHECKPOINT_PATH)}")
        node = node[key]
    if _ATTRIBUTE not in node:
        raise RuntimeError(f"this Lightning version's checkpoints have no {'/'.join(_CHECKPOINT_PATH)}")
    node[_ATTRIBUTE] += delta
