"""The run's lifecycle, in one place: which checkpoint a command starts from, resuming a run in its own
folder, stopping cleanly on Ctrl-C/SIGTERM, and writing predictions.

**Checkpoints.** Every checkpoint is loaded with ``torch.load(weights_only=True)``: tensors and plain
containers only, no pickled code. It is checked before Lightning sees it, so a wrong file fails in seconds
with the key to fix.

**Resume.** ``fit --ckpt_path last`` in Lightning means "the last checkpoint of *this* run's checkpoint
folder", and this run's folder is a new ``version_N``: nothing to resume. So the CLI resolves ``last`` itself,
to ``checkpoints/last.ckpt`` of the version the config names, else of the highest ``version_<n>`` that has one,
and continues that run: same folder, steps
continuing from the checkpoint's global step, and the logger's writer opened with ``purge_step`` so
TensorBoard drops the points the crashed session logged after the checkpoint (one curve, no duplicates).

**Stops.** ``LastCheckpoint`` owns ``last.ckpt``: periodic saves, the save on SIGTERM / Ctrl-C, and the exact
moment each is taken, so that Lightning's restore continues the run; ``ExactResume`` adds what that restore
leaves out (the random streams, the train loader's position).

**Predictions.** ``PredictionWriter`` writes ``predict`` results as CSV in the run folder.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

import numpy as np
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torchmetrics import Metric

from common.errors import TbxFinetuneError
from common.lightning_state import (
    count_logging_step,
    epoch_batches_done,
    flat_params,
    last_saved_step,
    request_graceful_stop,
    restart_epoch_iterator,
    restore_train_loader_position,
    save_every_n_steps,
    save_last_checkpoint,
    saved_loader_position,
    shift_checkpoint_logging_step,
    slurm_requeue_signal,
    start_next_epoch_in_checkpoint,
    validation_follows,
)
from loggers.tensorboardx import VERSION_DIR, TensorBoardXLogger

LAST = "last"
LAST_FILE = "last.ckpt"
EPOCH_END_FILE = "last.epoch_end"
"""Beside ``last.ckpt``: the step of a save taken at an epoch's last batch whose epoch end has since reached the record.
A resume from that save runs the epoch's end again (Lightning's restore), and its points are then repeats."""
LOCK_FILE = ".fit.lock"
"""In a run folder while a fit writes it: an ``flock`` the operating system drops when the process ends, even killed."""
CONFIG_FILE = "config.yaml"
"""LightningCLI's config of the run, in its folder (``SaveConfigCallback``'s default name)."""
LIGHTNING_ALIASES = ("best", "hpc", "registry")
"""Values of ``ckpt_path`` that Lightning resolves itself (``last`` is ours)."""


# ------------------------------------------------------------------------------------------ checkpoints
def find_last_checkpoint(root_dir: str, version: int | str | None = None) -> Path | None:
    """``last.ckpt`` of the run the config names (``trainer.logger.init_args.version``), else of the highest
    ``version_<n>`` under ``root_dir`` that has one: deterministic, whatever wrote last."""
    if version is not None:
        path = Path(root_dir) / version_folder(version) / "checkpoints" / LAST_FILE
        return path if path.is_file() else None
    numbered = [(int(m.group(1)), p) for p in Path(root_dir).glob(f"version_*/checkpoints/{LAST_FILE}")
                if (m := VERSION_DIR.match(p.parent.parent.name)) and p.is_file()]  # fmt: skip
    return max(numbered, default=(None, None))[1]


def version_folder(version: int | str) -> str:
    """A run's folder name, as Lightning's TensorBoardLogger names it: a str as is, an int ``version_<int>``."""
    return version if isinstance(version, str) else f"version_{version}"


def run_folder_of(ckpt_path: str | os.PathLike, root_dir: str) -> str | None:
    """The run folder name (``version_3``) when ``ckpt_path`` is ``root_dir/<run>/checkpoints/<file>``."""
    path = Path(ckpt_path).resolve()
    in_a_run = path.parent.name == "checkpoints" and path.parent.parent.parent == Path(root_dir).resolve()
    return path.parent.parent.name if in_a_run else None


def load_checkpoint(ckpt_path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped; every failure names ``key`` and the file."""
    if not os.path.isfile(ckpt_path):
        raise TbxFinetuneError(f"{key}={str(ckpt_path)!r}: no such checkpoint file; fix the path")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # UnpicklingError (code inside), RuntimeError (truncated / not a zip), EOFError
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TbxFinetuneError(
            f"{key}={str(ckpt_path)!r} is not a checkpoint that loads safely (torch.load weights_only=True: "
            f"{first_line}). Use a checkpoint written by this tool; never load files you do not trust"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise TbxFinetuneError(f"{key}={str(ckpt_path)!r} is not a Lightning checkpoint (it has no 'state_dict')")
    return checkpoint


def check_fits_model(checkpoint: dict[str, Any], model: torch.nn.Module, ckpt_path: str) -> None:
    """Raise our error when the checkpoint's weights do not match the model's (names and shapes)."""
    # metric states (torchmetrics modules: their shapes follow the labels, older checkpoints lack them) are no weights
    metric_states = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, Metric))
    expected = {n: tuple(t.shape) for n, t in model.state_dict().items() if not n.startswith(metric_states)}
    found = {n: tuple(t.shape) for n, t in checkpoint["state_dict"].items() if not n.startswith(metric_states)}
    reshaped = [
        f"{n}: checkpoint {found[n]} vs model {shape}" for n, shape in expected.items() if found.get(n, shape) != shape
    ]
    problems = [
        f"{len(items)} weight(s) {label} (e.g. {items[0]})"
        for label, items in (
            ("missing", sorted(expected.keys() - found.keys())),
            ("unexpected", sorted(found.keys() - expected.keys())),
            ("with another shape", reshaped),
        )
        if items
    ]
    if problems:
        raise TbxFinetuneError(
            f"ckpt_path={ckpt_path!r} was saved from a different model than the config builds: {'; '.join(problems)}. "
            "Use a checkpoint of this model (model.init_args.model_name_or_path and the data's labels must match)"
        )


def best_checkpoint(trainer: Trainer) -> str:
    """The path of the best checkpoint the monitoring ModelCheckpoint kept in this fit, ``""`` when there is none."""
    return next((cb.best_model_path for cb in trainer.checkpoint_callbacks if cb.monitor), "")


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt``, the one file a resume starts from, written so that the resumed run repeats and
    skips nothing. It is saved:

    - from the first step on, at the cadence chosen (one of the two, like Lightning's ModelCheckpoint), else at each
      epoch's last step (Lightning 2.6 writes ``last`` at an epoch's end only beside a top-k file, and this callback
      keeps none); the monitoring checkpoint (best ``val/acc``) saves nothing before its metric exists;
    - after the validation that follows a due step, not before it: Lightning restores a checkpoint taken at such a
      batch end as if its validation had run, so a kill during the validation would lose it;
    - at the end of fit, so a kill in what follows (``test_after_fit``, export) redoes no training;
    - (the save at an epoch's last batch comes before that epoch's end, which Lightning's restore runs again: once
      that end is on disk, ``EPOCH_END_FILE`` says so, and a resumed logger drops its repeated points;)
    - on SIGTERM, Ctrl-C or SLURM's requeue signal (SIGUSR1 when Lightning's ``SLURMEnvironment`` has
      ``auto_requeue`` on; after the save the job is requeued with ``scontrol``). Each only notes the request;
      every rank agrees on it at the next batch end (the optimizer step done and counted) or validation end, and
      then sets Lightning's stop flag, so all ranks stop at the same point and save one checkpoint. (Lightning's
      own SIGTERM handler saves nothing and under DDP broadcasts from inside the handler, which can deadlock; its
      SLURM handler saves from inside the handler, possibly mid-step; SIGINT alone raises ``KeyboardInterrupt``
      anywhere.) A second signal stops at once; a stop asked for during a validation happens at its end,
      before the epoch's end hooks; the process exits with 128 + the signal number.

    The logger drains its events file whenever a checkpoint is written, so the record is never behind the checkpoint.

    Args:
        every_n_train_steps: Save every this many optimizer steps (a crash loses at most that many).
        train_time_interval: Save every this much training time (``0:30:00``), checked at batch ends.
    """

    def __init__(self, every_n_train_steps: int | None = None, train_time_interval: timedelta | None = None) -> None:
        super().__init__(
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            enable_version_counter=False,  # one file, last.ckpt, overwritten: never last-v1.ckpt beside it
        )
        self._every_epoch = every_n_train_steps is None and train_time_interval is None
        self._step_cadence = every_n_train_steps or 0
        self._state_key = super().state_key  # from the arguments: the per-epoch cadence set later must not change it
        self._due_after_validation: tuple[Any, ...] | None = None
        self._signum: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._requeue_signal: int | None = None
        self._lock: IO | None = None
        self._validated_at: int | None = None
        self._saving_counted = False
        self._due_next_batch = False
        self._started_at = 0
        self._epoch_ended_after_save: int | None = None

    @property
    def state_key(self) -> str:
        return self._state_key

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath:
            self._lock = hold_run_lock(os.path.dirname(self.dirpath))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.remove(self._lock.name)
            self._lock.close()  # the lock goes with the file descriptor
            self._lock = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Lightning registers its SIGTERM handler just before this hook; signals can only be set in the main thread
        self._signum = None
        self._started_at = trainer.global_step
        if self._every_epoch and math.isfinite(trainer.num_training_batches):  # the epoch's optimizer steps
            self._step_cadence = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
            save_every_n_steps(self, self._step_cadence)
        self._requeue_signal = slurm_requeue_signal(trainer)
        stops = [signal.SIGINT, signal.SIGTERM] + ([self._requeue_signal] if self._requeue_signal else [])
        if threading.current_thread() is threading.main_thread():
            self._previous_handlers = {s: signal.signal(s, self._on_stop_signal) for s in stops}

    def _steps_due(self, trainer: Trainer) -> bool:
        """Whether the step cadence asks for a save at this step (a time cadence asks again at the next batch)."""
        every = self._step_cadence
        return bool(every) and trainer.global_step % every == 0 and last_saved_step(self) != trainer.global_step

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """Only note the request: every rank agrees on it at the next batch end or validation end (``_agreed_stop``).
        Lightning's own SIGTERM handler broadcasts from inside the handler and forwards the signal to the other
        ranks, which deadlocks under DDP when a rank is in a collective (and a Ctrl-C reaches every rank anyway)."""
        if self._signum is not None:  # asked twice: stop now, the usual way
            raise KeyboardInterrupt
        self._signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        rank_zero_info(f"\n{name}: stopping after this batch, saving last.ckpt (Ctrl-C again to stop at once)")

    def _agreed_stop(self, trainer: Trainer) -> bool:
        """Whether any rank was asked to stop (a collective: every rank calls it at the same point)."""
        asked = self._signum is not None or trainer.received_sigterm
        return trainer.strategy.reduce_boolean_decision(asked, all=False) if trainer.world_size > 1 else asked

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if validation_follows(trainer):
            self._due_after_validation = args
            return
        if args[-1] + 1 >= trainer.num_training_batches:
            # Lightning restores a save at an epoch's last batch end (no validation after it) as "next epoch begun"
            # but skips that epoch's start (on_train_epoch_start, its progress counts) and loads the spent position:
            # a save due here waits for the next batch's end, where Lightning restores mid-epoch as it should
            self._due_next_batch = self._due_next_batch or self._steps_due(trainer)
        elif self._due_next_batch:
            self._due_next_batch = False
            save_last_checkpoint(self, trainer)
        else:
            super().on_train_batch_end(trainer, pl_module, *args)
        if self._agreed_stop(trainer):
            request_graceful_stop(trainer)  # Lightning's loop stops after this batch, on every rank

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking:
            return
        if self._due_after_validation is not None:
            args, self._due_after_validation = self._due_after_validation, None
            super().on_train_batch_end(trainer, pl_module, *args)
        if self._agreed_stop(trainer):
            raise SIGTERMException  # saved in on_exception, as things stand at the validation's end
        self._validated_at = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning restores a save at the epoch's last batch as "validated, epoch end not run" and runs the end again;
        # its train/* epoch points, logged right after this hook, are noted as recorded at the next epoch or the end
        if last_saved_step(self) == trainer.global_step:
            self._epoch_ended_after_save = trainer.global_step

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._note_epoch_end_recorded(trainer)

    def _note_epoch_end_recorded(self, trainer: Trainer) -> None:
        """Write ``EPOCH_END_FILE`` once the epoch end after ``last.ckpt`` is on disk (the logger drained)."""
        step, self._epoch_ended_after_save = self._epoch_ended_after_save, None
        if step is None or not self.dirpath or not trainer.is_global_zero or last_saved_step(self) != step:
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardXLogger)]
        for logger in loggers:
            logger.flush()
        if loggers:  # written whole or not at all
            path = os.path.join(self.dirpath, EPOCH_END_FILE)
            Path(f"{path}.tmp").write_text(str(step), encoding="utf-8")
            os.replace(f"{path}.tmp", path)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        # Lightning reads "last batch finished, validation due after it" as a save at that validation's end, before
        # the loop counted the step for the loggers, and adds that count itself on restore; a save after the count
        # (a stop at a batch end, the end of fit) must then store it uncounted, or a resume logs one step late
        if self._saving_counted and self._validated_at == trainer.global_step:
            shift_checkpoint_logging_step(checkpoint, -1)
        elif self._saving_counted and epoch_batches_done(checkpoint) >= trainer.num_training_batches:
            start_next_epoch_in_checkpoint(checkpoint)  # after an epoch's unvalidated last batch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_signals()
        super().on_train_end(trainer, pl_module)
        self._note_epoch_end_recorded(trainer)
        if trainer.global_step == self._started_at:
            # restored with nothing left to train: Lightning adds the count a save at validation end left out only
            # when it trains on, so the test after fit would log one step early
            count_logging_step(trainer, trainer.global_step)
        elif self.dirpath and last_saved_step(self) != trainer.global_step and not trainer.fast_dev_run:
            self._save_counted(trainer)

    def _save_counted(self, trainer: Trainer) -> None:
        """Save ``last.ckpt`` after the loop counted the last step (a stop, the end of fit)."""
        self._saving_counted = True
        try:
            trainer.save_checkpoint(os.path.join(self.dirpath, LAST_FILE), weights_only=False)
        finally:
            self._saving_counted = False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_signals()
        if not isinstance(exception, SIGTERMException):
            return  # a bug or a second Ctrl-C mid-step: keep the last periodic checkpoint rather than a torn state
        signum = self._signum or signal.SIGTERM
        exception.code = 128 + signum  # SIGTERMException is a SystemExit: this becomes the exit status
        if not self.dirpath:
            return
        if last_saved_step(self) != trainer.global_step:  # (a periodic save at this very point stands)
            self._save_counted(trainer)  # all ranks stop at one point: the save's barrier is met
        rank_zero_info(
            f"tbx-finetune: stopped by {signal.Signals(signum).name} at step {trainer.global_step}; saved "
            f"{os.path.join(self.dirpath, LAST_FILE)}. Continue the run with the same command plus --ckpt_path last"
        )
        if signum == self._requeue_signal and trainer.is_global_zero:
            requeue_slurm_job()

    def _restore_signals(self) -> None:
        if self._previous_handlers and threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
        self._previous_handlers = {}


def epoch_end_recorded(ckpt_path: str, step: int) -> bool:
    """Whether the record holds the end of the epoch that a save at ``step`` came before (``EPOCH_END_FILE``)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path(ckpt_path).with_name(EPOCH_END_FILE).read_text(encoding="utf-8")) == step
    return False


def hold_run_lock(run_dir: str) -> IO | None:
    """Take the run folder's lock for as long as the returned file stays open (``None`` where the file system has no
    ``flock``): ``check_not_running`` then refuses to resume the run while this fit still writes it."""
    os.makedirs(run_dir, exist_ok=True)
    handle = open(os.path.join(run_dir, LOCK_FILE), "a+", encoding="utf-8")  # held open until the fit's teardown
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by another fit (check_not_running said no before), or no flock on this file system
        handle.close()
        return None
    handle.truncate(0)  # (opened for appending: the write lands at the start)
    print(f"pid {os.getpid()} on {socket.gethostname()}", file=handle, flush=True)
    return handle


def check_not_running(run_dir: str) -> None:
    """Refuse to continue a run that a fit is still writing (two writers would interleave one record)."""
    path = os.path.join(run_dir, LOCK_FILE)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "another process"
            raise TbxFinetuneError(
                f"--ckpt_path: {run_dir} is still being trained ({holder}); stop that run first (Ctrl-C saves "
                "last.ckpt), or start a new run without --ckpt_path"
            ) from None
        except OSError:
            return  # no flock on this file system: nothing to check with (only this; a busy lock always refuses)


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job (what Lightning's SLURM handler does, here after ``last.ckpt`` is saved at a batch
    boundary instead of a checkpoint written from inside the signal handler, possibly mid-step)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    result = subprocess.call(["scontrol", "requeue", job]) if shutil.which("scontrol") else "no scontrol on PATH"
    if result == 0:
        rank_zero_info(f"tbx-finetune: requeued SLURM job {job}; its restart continues the run (--ckpt_path last)")
    else:
        rank_zero_warn(f"tbx-finetune: scontrol requeue {job} failed ({result}); resubmit with --ckpt_path last")


def best_weights(trainer: Trainer) -> tuple[str, dict[str, torch.Tensor] | None]:
    """The best checkpoint's path and ``state_dict`` (loaded safely), or ``("", None)`` when there is none."""
    best = best_checkpoint(trainer)
    return (best, load_checkpoint(best)["state_dict"]) if best else ("", None)


# ------------------------------------------------------------------------------------------------- resume
RUN_DEFINING = (
    "seed_everything",
    "model.",
    "data.",
    "trainer.precision",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.gradient_clip_algorithm",
)
"""Config keys that define a run: a resume must keep them (the restored optimizer, schedule and data order
were made with them)."""
MAY_CHANGE = (
    "data.init_args.eval_batch_size",
    "data.init_args.predict_split",
    "data.init_args.sort_eval_by_length",
    "data.init_args.pad_to_multiple_of",
    "model.init_args.compile",  # (also compile_backend, compile_bucket: padding is masked, the logits do not change)
    "model.init_args.fused_adamw",  # one kernel or several for the same update; the optimizer's state is the same
)
"""Run-defining by prefix but free to change on resume: they do not change what is trained, only how fast. (Not
``num_workers``: the loader's saved position is laid out per worker process; not ``group_by_length``: the order.)"""


def check_resume_keeps_the_run(run_dir: str, config: Any) -> None:
    """Refuse a resume whose config changes what defines the run, before anything is loaded or written.

    ``max_epochs`` / ``max_steps`` (extending a run), devices and logging cadence may change.
    """
    saved_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(saved_path):
        return
    old = flat_params(yaml.safe_load(Path(saved_path).read_text(encoding="utf-8")) or {})
    # the config now as the saved YAML file holds it: tuples → lists, paths → str
    new = flat_params(json.loads(json.dumps(config.as_dict(), default=str)))
    changes = [  # key: old → new, for each run-defining key whose value differs
        f"{key}: {old[key]} → {new[key]}"
        for key in sorted(old.keys() & new.keys())
        if key.startswith(RUN_DEFINING) and not key.startswith(MAY_CHANGE) and str(old[key]) != str(new[key])
    ]
    if changes:
        raise TbxFinetuneError(
            f"--ckpt_path continues {run_dir}, whose run was made with other settings: {'; '.join(changes)}. "
            f"Resume with the run's own settings (--config {saved_path}), or start a new run without --ckpt_path"
        )


@dataclass
class Resume:
    """Log into run ``folder`` of the logger's ``root``: ``fit`` continues it from ``step`` on (later points of
    the crashed session hidden); ``validate``/``test``/``predict`` add their metrics to it (``step`` None)."""

    folder: str
    step: int | None
    epoch_end_recorded: bool = False


class CheckpointRequest:
    """What ``--ckpt_path`` asks of this command, resolved in the CLI's three phases.

    ``parse`` loads the file safely right after parsing (LightningCLI reads its hyperparameters next);
    ``resolve`` turns ``last`` into a file and decides which run folder the command writes into: a checkpoint of
    a run continues (``fit``) or adds to (the others) that run; ``validate``/``test``/``predict`` of anything
    else write no run folder at all. ``apply`` checks the weights against the built model and points the
    logger at that folder, or removes it.
    """

    def __init__(self) -> None:
        self.checkpoint: dict[str, Any] | None = None
        self.resume: Resume | None = None
        self.no_run_folder = False

    def parse(self, config: Any) -> None:
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in (LAST, *LIGHTNING_ALIASES):
            self.checkpoint = load_checkpoint(ckpt_path)

    def resolve(self, subcommand: str, config: Any) -> bool:
        """Settle ``config["ckpt_path"]``; True when ``fit`` continues an existing folder (its config is rewritten)."""
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True  # Lightning leaves it to torch.load's default; say it
        root, version = logger_root(config)
        if config.get("ckpt_path") == LAST:
            found = find_last_checkpoint(root, version) if root else None
            where = os.path.join(str(root), "version_*" if version is None else version_folder(version))
            if found is None and subcommand != "fit":
                raise TbxFinetuneError(f"--ckpt_path last: no {where}/checkpoints/{LAST_FILE} to {subcommand}")
            if found is None:
                rank_zero_info(f"tbx-finetune: --ckpt_path last: no {where}/checkpoints/{LAST_FILE}, new run")
            config["ckpt_path"] = str(found) if found else None
        ckpt_path = config.get("ckpt_path")
        self.no_run_folder = subcommand != "fit"
        if not ckpt_path or ckpt_path in LIGHTNING_ALIASES:
            return False
        if self.checkpoint is None:
            self.checkpoint = load_checkpoint(ckpt_path)
        folder = run_folder_of(ckpt_path, root) if root else None
        if folder and subcommand == "fit":
            check_not_running(os.path.join(root, folder))
            check_resume_keeps_the_run(os.path.join(root, folder), config)
        if folder:
            step = int(self.checkpoint.get("global_step", 0)) if subcommand == "fit" else None
            recorded = step is not None and epoch_end_recorded(ckpt_path, step)
            self.resume, self.no_run_folder = Resume(folder, step, recorded), False
        return self.resume is not None and subcommand == "fit"

    def apply(self, model: torch.nn.Module, trainer: Trainer, ckpt_path: str | None) -> None:
        if self.checkpoint is not None:
            check_fits_model(self.checkpoint, model, ckpt_path)
            self.checkpoint = None  # Lightning loads it again when the run starts
        if self.no_run_folder:
            trainer.logger = None  # metrics go to the console; predictions to --predictions.output_path or ./
        elif self.resume:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardXLogger):
                    logger.continue_run(self.resume.folder, self.resume.step, self.resume.epoch_end_recorded)


def logger_root(config: Any) -> tuple[str | None, int | str | None]:
    """``save_dir/name`` of the run's TensorBoardXLogger (where ``version_*`` folders are) and the version the
    config names, if it uses ours."""
    logger = (config.get("trainer") or {}).get("logger")
    ours = tuple(f"{module}.{TensorBoardXLogger.__name__}" for module in ("loggers", "loggers.tensorboardx"))
    if not logger or logger.get("class_path") not in ours:
        return None, None
    init_args = logger.get("init_args") or {}
    root = os.path.join(str(init_args.get("save_dir", "runs")), str(init_args.get("name", "default")))
    return root, init_args.get("version")


class ExactResume(Callback):
    """What Lightning's restore leaves out, so a resumed run goes on as the uninterrupted one would:

    - every rank's random streams (torch CPU and CUDA, NumPy, Python) in each checkpoint, put back when training
      resumes, so dropout after a resume draws what the uninterrupted run drew (HF Trainer saves them too);
    - the train loader's position, which Lightning skips when the LR schedule's length was asked before the
      restore (``common.lightning_state.restore_train_loader_position``), or, resuming at a new epoch, that
      epoch's iterator built again once the random streams are back (``restart_epoch_iterator``).

    Both happen in ``on_train_start``: after the restore, before the first batch.
    """

    def __init__(self) -> None:
        self._restored: list[dict[str, Any]] | None = None
        self._position_saved = False

    def state_dict(self) -> dict[str, Any]:
        _, keys, *numpy_rest = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [torch.from_numpy(keys.astype(np.int64)), *numpy_rest],
            "python": random.getstate(),
        }
        ranks = [state]
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank saves together
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, state)
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("ranks")

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._position_saved = saved_loader_position(checkpoint)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        restore_train_loader_position(trainer)
        states, self._restored = self._restored, None
        if not states or len(states) != trainer.world_size:  # another number of processes: streams start anew
            return
        state = states[trainer.global_rank]
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        keys, *rest = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
        random.setstate(state["python"])
        if not (self._position_saved and trainer.fit_loop.restarting):  # a new epoch: its shuffle from these streams
            restart_epoch_iterator(trainer)


# ---------------------------------------------------------------------------------------------- predictions
class PredictionWriter(BasePredictionWriter):
    """Collects each rank's predictions and writes them once the predict epoch ends.

    Args:
        output_path: CSV file to write. ``None``: ``predictions.csv`` in the run directory. Under DDP each
            rank writes ``<stem>.rank<N>.csv`` (rows carry the dataset index, so they can be merged).
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_path = output_path
        self._rows: list[tuple[int, int, float]] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: list[int] | None,
        *_: Any,
    ) -> None:
        label_ids = prediction["label_ids"].tolist()
        probabilities = prediction["probabilities"].float().tolist()
        indices = batch_indices if batch_indices is not None else range(len(label_ids))
        self._rows.extend(zip(indices, label_ids, probabilities, strict=True))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.output_path
        if path is None:
            base = getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir
            path = os.path.join(base, "predictions.csv")
        if trainer.world_size > 1:
            stem, ext = os.path.splitext(path)
            path = f"{stem}.rank{trainer.global_rank}{ext}"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        inputs = getattr(trainer.datamodule, "predict_inputs", None)
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["index", "input", "label", "probability"])
            for index, label_id, probability in sorted(self._rows):
                shown = inputs[index] if inputs is not None else ""
                out.writerow([index, shown, pl_module.label_names[label_id], f"{probability:.6f}"])
        rank_zero_info(f"wrote {len(self._rows)} predictions to {path}")
