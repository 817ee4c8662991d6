"""The private pieces of Lightning this project uses, behind one wrapper that fails loudly.

Lightning gives logged metrics the fit loop's count of batches that stepped the optimizer
(``fit_loop.epoch_loop._batches_that_stepped``), not ``global_step``; pictures and alerts must carry the same
step to line up with ``val/*`` scalars, and a checkpoint saved on an interrupt must store that count as the
restored loop expects it. No public name exists (Lightning 2.6). If an upgrade moves it, these functions raise
instead of returning a wrong step, and ``tests/test_architecture.py`` fails on the upgrade.

Resuming at an epoch's boundary needs Lightning's checkpoint layout (``loops/fit_loop/...``: the progress counts and
the train loader's position) and its fit loop's iterator: Lightning 2.6 restores some saves there as a state it then
mishandles (#19617), so ``app.lifecycle.LastCheckpoint`` stores them in a form it restores well. Every helper checks the
layout it reads and raises on a mismatch.

Flattening hyperparameters reuses Lightning's own (private) helpers, so our HPARAMS keys match its loggers'.
Tracing a LightningModule for TensorBoard's graph needs Lightning's own ``_jit_is_scripting`` context (it
silences the module's trainer-bound properties while torch.jit inspects it), as Lightning's TensorBoardLogger does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from lightning.fabric.utilities.data import _set_sampler_epoch

_ATTRIBUTE = "_batches_that_stepped"
_CHECKPOINT_PATH = ("loops", "fit_loop", "epoch_loop.state_dict", _ATTRIBUTE)


def _private(owner: Any, name: str, where: str) -> Any:
    """``owner.<name>``, a private attribute of Lightning's ``where``; raises when this Lightning version has none."""
    if not hasattr(owner, name):
        raise RuntimeError(f"this Lightning version's {where} has no {name}: common/lightning_state.py must learn it")
    return getattr(owner, name)


def logging_step(trainer: Any) -> int:
    """The step Lightning's logger connector gives the metrics logged now (``self.log`` → logger)."""
    return int(_private(trainer.fit_loop.epoch_loop, _ATTRIBUTE, "fit_loop.epoch_loop"))


def count_logging_step(trainer: Any, step: int) -> None:
    """Set the step Lightning's logger connector gives the metrics logged next."""
    logging_step(trainer)  # fails loudly if the attribute moved
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def _checkpoint_node(checkpoint: dict, path: tuple[str, ...]) -> dict:
    node: Any = checkpoint
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise RuntimeError(f"this Lightning version's checkpoints have no {'/'.join(path)}")
        node = node[key]
    return node


def shift_checkpoint_logging_step(checkpoint: dict, delta: int) -> None:
    """Add ``delta`` to the logging step a Lightning checkpoint dict restores."""
    _checkpoint_node(checkpoint, _CHECKPOINT_PATH[:-1])[_ATTRIBUTE] = (
        _checkpoint_node(checkpoint, _CHECKPOINT_PATH) + delta
    )


def save_last_checkpoint(checkpoint_callback: Any, trainer: Any) -> None:
    """Have a ``ModelCheckpoint`` write its ``last`` file now, keeping its own record of the save (its
    ``_save_last_checkpoint``, what its cadence calls)."""
    candidates = _private(checkpoint_callback, "_monitor_candidates", "ModelCheckpoint")(trainer)
    _private(checkpoint_callback, "_save_last_checkpoint", "ModelCheckpoint")(trainer, candidates)


def validation_follows(trainer: Any) -> bool:
    """Whether the fit loop validates right after the training batch that is ending (asked in
    ``on_train_batch_end``): Lightning's own decision, ``_should_check_val_fx``."""
    decide = _private(trainer.fit_loop.epoch_loop, "_should_check_val_fx", "fit_loop.epoch_loop")
    return bool(decide(_private(trainer.fit_loop, "_data_fetcher", "fit_loop")))


def restore_train_loader_position(trainer: Any) -> None:
    """Load the train loader's saved position if Lightning skipped it, and start the epoch's iterator there.

    ``trainer.estimated_stepping_batches`` (the LR schedule's length, asked in ``configure_optimizers``) builds the
    train loader before the checkpoint is restored; Lightning 2.6 then never loads the loaders' saved states, so a
    resumed epoch starts its order again (Lightning-AI/pytorch-lightning#20550, open; PR #21765 does this).
    Call it in ``on_train_start``: after the restore, before the first batch is fetched.
    """
    fit_loop = trainer.fit_loop
    _private(fit_loop, "_load_combined_loader_states", "fit_loop (see if #20550 is fixed)")
    if not _private(fit_loop, "_combined_loader_states_to_load", "fit_loop (see if #20550 is fixed)"):
        return
    # the resumed epoch's shuffle: Lightning sets a DistributedSampler's epoch at the epoch's start, after this
    # iterator exists, so without this a resumed epoch >= 1 replays epoch 0's order from the saved position
    _set_samplers_epoch(fit_loop)
    fit_loop._load_combined_loader_states()
    if not fit_loop._combined_loader_states_to_load and fit_loop._data_fetcher is not None:  # loaded: iterate anew
        iter(fit_loop._data_fetcher)


def restart_epoch_iterator(trainer: Any) -> None:
    """After a restore that starts a new epoch (a save after an epoch's end), build the train iterator again, with the
    epoch's sampler epoch: Lightning built it before the restore, so a plain shuffle drew its order from the random
    streams of the new process instead of the restored ones (a resumed fit does not iterate anew at its first epoch).
    Call it in ``on_train_start``, after the random streams are restored."""
    fit_loop = trainer.fit_loop
    _set_samplers_epoch(fit_loop)
    iter(_private(fit_loop, "_data_fetcher", "fit_loop"))


def _set_samplers_epoch(fit_loop: Any) -> None:
    """Give the train loaders' samplers the loop's epoch, what Lightning calls at an epoch's start."""
    combined = _private(fit_loop, "_combined_loader", "fit_loop")
    for loader in combined.flattened if combined is not None else ():
        _set_sampler_epoch(loader, fit_loop.epoch_progress.current.processed)


def epoch_batches_done(checkpoint: dict) -> int:
    """How many batches of the current epoch a Lightning checkpoint dict counts as completed."""
    return int(_checkpoint_node(checkpoint, ("loops", "fit_loop", "epoch_loop.batch_progress", "current", "completed")))


def saved_loader_position(checkpoint: dict) -> bool:
    """Whether a Lightning checkpoint dict holds the train loader's position (``restore_train_loader_position``)."""
    return "combined_loader" in _checkpoint_node(checkpoint, ("loops", "fit_loop", "state_dict"))


def start_next_epoch_in_checkpoint(checkpoint: dict) -> None:
    """Store a checkpoint taken after an epoch's last batch (fit's end, a stop) as the next epoch about to begin: no
    loader position (that epoch's is spent) and no batch of it counted, what Lightning's reset does at an epoch's
    start. Restored otherwise, Lightning takes the spent epoch as still running (``max_steps`` runs: #19617) and
    trains on the rest of its order, or nothing."""
    fit_loop = _checkpoint_node(checkpoint, ("loops", "fit_loop"))
    _checkpoint_node(fit_loop, ("state_dict",)).pop("combined_loader", None)
    progress = _checkpoint_node(fit_loop, ("epoch_loop.batch_progress",))
    progress["current"] = dict.fromkeys(_checkpoint_node(progress, ("current",)), 0)
    progress["is_last_batch"] = False


def last_saved_step(checkpoint_callback: Any) -> int:
    """The global step a ``ModelCheckpoint`` last saved at (its ``_last_global_step_saved``; 0 before any)."""
    return int(_private(checkpoint_callback, "_last_global_step_saved", "ModelCheckpoint"))


def save_every_n_steps(checkpoint_callback: Any, steps: int) -> None:
    """Set a ``ModelCheckpoint``'s ``every_n_train_steps`` after it was built (its ``_every_n_train_steps``)."""
    _private(checkpoint_callback, "_every_n_train_steps", "ModelCheckpoint")
    checkpoint_callback._every_n_train_steps = steps


def jit_tracing() -> AbstractContextManager:
    """The context Lightning's own TensorBoardLogger traces a LightningModule in (``log_graph``)."""
    from lightning.pytorch.core.module import _jit_is_scripting  # private; the import fails loudly on an upgrade

    return _jit_is_scripting()


def request_graceful_stop(trainer: Any) -> None:
    """Set Lightning's own stop flag (what its SIGTERM handler sets): the loop then ends after the current batch
    (``SIGTERMException``). Its handler also broadcasts inside the signal handler, which deadlocks under DDP when
    another rank is in a collective; callers set the flag only once every rank agreed, at the same batch."""
    connector = _private(trainer, "_signal_connector", "Trainer")
    _private(connector, "received_sigterm", "Trainer._signal_connector")
    connector.received_sigterm = True


def slurm_requeue_signal(trainer: Any) -> int | None:
    """The signal SLURM sends before a requeue when the run's ``SLURMEnvironment`` has ``auto_requeue`` on (Lightning
    registers its own handler for it then), else ``None``."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = _private(trainer, "_accelerator_connector", "Trainer").cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return environment.requeue_signal
    return None


def flat_params(params: Any) -> dict[str, Any]:
    """Hyperparameters (dict or Namespace, nested) flattened with "." and made TensorBoard-safe, the way
    Lightning's own loggers do it (``lightning.fabric.utilities.logger``'s private helpers)."""
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict, _sanitize_params

    flat = _flatten_dict(_convert_params(params), delimiter=".")
    # typed numbers (jsonargparse's PositiveInt, ...) are int/float subclasses: keep them numbers, not strings
    typed = {k: v for k, v in flat.items() if isinstance(v, int | float) and type(v) not in (int, float, bool)}
    plain = {k: int(v) if isinstance(v, int) else float(v) for k, v in typed.items()}
    return _sanitize_params({**flat, **plain})
