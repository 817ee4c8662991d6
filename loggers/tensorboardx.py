"""A Lightning logger that writes TensorBoard event files through tensorboardX only.

Built on Lightning's own ``TensorBoardLogger`` (its folder layout ``save_dir/name/version_N``, so
``trainer.log_dir`` is the run's folder and LightningCLI's config, a profiler or a user's callback land in the
run), replacing what it gets wrong for us: it silently switches to ``torch.utils.tensorboard`` when the
``tensorboard`` package is installed, its ``log_hyperparams`` writes a ``hp_metric = -1`` placeholder, and it
picks ``version_N`` by listing directories, which races when two runs start together. This logger imports
tensorboardX explicitly, writes the HPARAMS summaries into the run's own events file (so the table shows the
run's real metrics), and allocates the version directory with an atomic ``mkdir``.

This module is the only code in the project that touches tensorboardX.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from argparse import Namespace
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX import SummaryWriter
from tensorboardX.proto.api_pb2 import Status
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.proto.tensor_pb2 import TensorProto
from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboardX.summary import hparams as hparams_summaries

from common.errors import TbxFinetuneError
from common.lightning_state import flat_params
from loggers.record import TensorBoardRecord

DEFAULT_HPARAMS_METRICS = {
    "val/acc": "val accuracy",
    "val/f1": "val F1 (macro)",
    "val/loss": "val loss",
    "test/acc": "test accuracy",
    "test/f1": "test F1 (macro)",
    "test/loss": "test loss",
}
"""The metric tags the HPARAMS tab shows beside each run's config (TensorBoard shows the first five by default),
with their column names; their last logged values fill the table."""
DEFAULT_HPARAMS_SHOWN = {
    "model.init_args.learning_rate": "learning rate",
    "batch_size_effective": "batch size (effective)",
    "model": "model",
    "trainer.max_epochs": "epochs",
    "seed_everything": "seed",
}
"""The hyperparameters the HPARAMS table shows by default, with their column names. TensorBoard shows five,
those marked ``differs`` first, then by key: these are marked, every other key stays selectable."""

CUSTOM_SCALARS_LAYOUT = {
    "curves": {
        "loss: train vs val": ["Multiline", [r"^train/loss$", r"^train/loss_epoch$", r"^val/loss$"]],
        "accuracy: train vs val": ["Multiline", [r"^train/acc$", r"^val/acc$"]],
        "learning rate": ["Multiline", [r"^lr-"]],
        "total gradient norm": ["Multiline", [r"^grad_norm/total$"]],
    }
}
"""The CUSTOM SCALARS tab: what belongs on one chart (tag regexes), which the SCALARS tab never does."""

RESUMED_TAG = "run/resumed"
"""A text point at the step a resumed fit continued from (TensorBoard's reader does not expose the purge step)."""

_SESSION_STATUS = {
    "success": Status.STATUS_SUCCESS,
    "finished": Status.STATUS_SUCCESS,
    "failed": Status.STATUS_FAILURE,
    "interrupted": Status.STATUS_FAILURE,
}
_WRITERS_IN_PROCESS = itertools.count(1)
VERSION_DIR = re.compile(r"^version_(\d+)$")
"""A numbered run folder's name (``version_<n>``), as Lightning's TensorBoardLogger names it."""


class _Writer(SummaryWriter):
    """tensorboardX's writer whose ``add_text`` writes markdown under the tag as given: tensorboardX's own appends
    ``/text_summary`` to the tag and writes a one-element list, which TensorBoard shows as a one-cell table."""

    def add_text(self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None):
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text_string.encode()], tensor_shape=TensorShapeProto())
        value = Summary.Value(tag=tag, metadata=metadata, tensor=tensor)
        self._get_file_writer().add_summary(Summary(value=[value]), global_step, walltime)


class TensorBoardXLogger(TensorBoardLogger):
    """Writes scalars, hyperparameters and (through callbacks) histograms to ``save_dir/name/version_N``.

    Args:
        save_dir: Root of all runs; checkpoints and LightningCLI's ``config.yaml`` land beside the events.
        name: Experiment name, the folder under ``save_dir``.
        version: A fixed version (int → ``version_<int>``, str → used as is). ``None`` allocates the next
            free ``version_N`` atomically on global rank 0.
        hparams_metrics: Metric tags declared to TensorBoard's HPARAMS plugin → their column names (a list: the
            tags themselves). Default: ``DEFAULT_HPARAMS_METRICS``.
        hparams_shown: Hyperparameter keys the HPARAMS table shows first → their column names. Default:
            ``DEFAULT_HPARAMS_SHOWN`` (learning rate, effective batch size, model, epochs, seed).
        log_graph: Write the model graph when Lightning asks (needs ``example_input_array``); off by
            default because tracing a transformer is slow.
        flush_secs: How often pending events reach the disk; small so that a crash loses little.
        max_queue: Events buffered before a forced flush.
        purge_step: Resuming a run in its own directory: TensorBoard hides the points this run's earlier
            writers logged at steps ≥ ``purge_step`` (written after the checkpoint, before the crash). Set by
            the CLI on ``fit --ckpt_path``; applies to this logger's first writer only.
    """

    def __init__(
        self,
        save_dir: str = "runs",
        name: str = "default",
        version: int | str | None = None,
        hparams_metrics: dict[str, str] | list[str] | None = None,
        hparams_shown: dict[str, str] | None = None,
        log_graph: bool = False,
        flush_secs: int = 10,
        max_queue: int = 100,
        purge_step: int | None = None,
    ) -> None:
        super().__init__(save_dir, name=name, version=version, log_graph=log_graph, default_hp_metric=False)
        metrics = DEFAULT_HPARAMS_METRICS if hparams_metrics is None else hparams_metrics
        self._hparams_metrics = dict(metrics) if isinstance(metrics, Mapping) else {tag: tag for tag in metrics}
        self._hparams_shown = dict(DEFAULT_HPARAMS_SHOWN if hparams_shown is None else hparams_shown)
        self._log_graph = log_graph
        self._writer_options = {"flush_secs": flush_secs, "max_queue": max_queue}
        self._purge_step = purge_step
        self._epoch_end_recorded = False
        self._writers_opened = 0
        self._drain_after_next_log = False
        self._last_points: dict[str, tuple[int | None, float]] = {}
        self.hparams: dict[str, Any] = {}
        self._hparams_written = False
        self._hparams_saved: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------- paths
    @property
    def version(self) -> int | str | None:
        """The run's version; allocated on first access on rank 0, received by broadcast elsewhere."""
        if self._version is None and rank_zero_only.rank == 0:
            self._version = self._allocate_version()
        return self._version

    def _allocate_version(self) -> int:
        """Claim the next free ``version_N`` with ``os.mkdir``, which fails if another run won the race."""
        try:
            os.makedirs(self.root_dir, exist_ok=True)
            taken = [int(m.group(1)) for d in os.listdir(self.root_dir) if (m := VERSION_DIR.match(d))]
            for candidate in itertools.count(max(taken, default=-1) + 1):
                with contextlib.suppress(FileExistsError):  # taken by another run since the listing: try the next
                    os.mkdir(os.path.join(self.root_dir, f"version_{candidate}"))
                    return candidate
        except OSError as err:  # not a folder, read-only, no permission, disk full
            raise TbxFinetuneError(
                f"cannot create the run directory in {self.root_dir!r} ({err.strerror}: {err.filename}); "
                "point trainer.logger.init_args.save_dir at a writable folder"
            ) from err

    def continue_run(self, version: int | str, purge_step: int | None, epoch_end_recorded: bool = False) -> None:
        """Log into an existing run folder: a resumed fit hides the folder's points at steps ≥ ``purge_step``;
        ``None`` (validate/test/predict of the run's checkpoint) adds to the run and hides nothing.
        ``epoch_end_recorded``: the record has the end of the epoch the checkpoint was saved in, which Lightning's
        restore runs again; its points (before ``purge_step``) are then not written twice."""
        if self._experiment is not None:
            raise RuntimeError("continue_run must be called before anything is logged")
        self._version = version
        self._purge_step = purge_step
        self._epoch_end_recorded = epoch_end_recorded

    def agree_on_version(self, broadcast: Callable[[Any], Any]) -> None:
        """Make every rank use rank 0's version (pass ``trainer.strategy.broadcast``); all ranks must call it."""
        self._version = broadcast(self.version)

    # ------------------------------------------------------------------------------------ experiment
    @property
    @rank_zero_experiment
    def experiment(self) -> SummaryWriter:
        """The tensorboardX writer (rank 0 only; other ranks get a no-op object)."""
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            # tensorboardX names files events.out.tfevents.<seconds>.<host>: two writers opened in the same
            # second (fit then test, a pickled clone, a second logger in the same process) would share one file;
            # the suffix carries the pid and a per-process count of writers, zero-padded: TensorBoard reads a run
            # folder's files in name order and drops points that go back in steps
            self._writers_opened += 1
            self._experiment = _Writer(
                logdir=self.log_dir,
                **self._writer_options,
                filename_suffix=f".{os.getpid()}.{next(_WRITERS_IN_PROCESS):06d}",  # sorts as written
                # a later writer (test_after_fit) must not purge what this session wrote since the resume
                purge_step=self._purge_step if self._writers_opened == 1 else None,
            )
            if self._writers_opened == 1 and self._purge_step is not None:  # the run's record says where it resumed
                self._experiment.add_text(RESUMED_TAG, f"resumed at step {self._purge_step}", self._purge_step)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float | torch.Tensor], step: int | None = None) -> None:
        if not self._hparams_written and self.hparams:
            self._write_hparams()
        writer = self.experiment
        for tag, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if self._last_points.get(tag) == (step, value) or self._kept_before_resume(tag, step):
                continue  # Lightning adds `epoch` to every call: one point per step, not three identical ones
            self._last_points[tag] = (step, value)
            writer.add_scalar(tag, value, global_step=step)
        if self._drain_after_next_log:
            self._drain_after_next_log = False
            self.flush()

    def _kept_before_resume(self, tag: str, step: int | None) -> bool:
        """A point at a step before a resumed fit's first that the record kept from before has: ``epoch`` (Lightning
        adds it to every call, and a resume's first call can be the end of an epoch validated before the stop), and
        every point of an epoch end run again when the record has that end (``continue_run``)."""
        before = None not in (step, self._purge_step) and step < self._purge_step
        return before and (tag == "epoch" or self._epoch_end_recorded)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, metrics: Any = None) -> None:
        """Collect (flattened) hyperparameters; they are written once, before the first metric.

        Lightning and our config callback may each call this before training starts; writing once keeps
        a single session-start record per run, which is what TensorBoard's HPARAMS plugin expects.
        """
        self.hparams.update({k: v for k, v in flat_params(params).items() if v is not None and v != "None"})

    def _write_hparams(self) -> None:
        experiment, session_start, _ = hparams_summaries(
            hparam_dict=self.hparams, metric_dict=dict.fromkeys(self._hparams_metrics, 0.0)
        )
        writer = self.experiment
        writer.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)
        writer.file_writer.add_summary(_curated(experiment, self._hparams_shown, self._hparams_metrics))
        writer.file_writer.add_summary(session_start)
        self._hparams_written = True

    @rank_zero_only
    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Lightning calls this at the start of every fit: trace ``model`` into the GRAPHS tab when the logger was
        built with ``log_graph=True`` (``visuals.graph`` does it for any TensorBoard logger)."""
        if not self._log_graph:
            return
        input_array = model.example_input_array if input_array is None else input_array
        if input_array is None:
            rank_zero_warn("log_graph needs `input_array` or `model.example_input_array`; graph not logged.")
            return
        TensorBoardRecord(self.experiment).graph(model, input_array)

    @rank_zero_only
    def save(self) -> None:
        """Write ``hparams.yaml`` when the hyperparameters changed.

        Lightning calls this after every ``log_metrics``; flushing or rewriting files there cost ~8 ms per
        log step (Lightning's TensorBoardLogger flushes here). Events reach the disk through the writer thread
        every ``flush_secs`` and at ``finalize``.
        """
        if self._experiment is None or not self.hparams or self._hparams_saved == self.hparams:
            return
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)
        self._hparams_saved = dict(self.hparams)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Drain the events to disk when a checkpoint is written, and again after the next point: Lightning logs
        the checkpointed step's ``train/*`` only after the checkpoint (``on_train_batch_end`` comes first), and a
        resume starts after that step, so without the second drain a kill could leave it out of the record.

        tensorboardX's ``flush`` does not wait for its writer thread's queue and its writer cannot reopen after
        ``close``: each drain closes the writer, and the next point opens a new events file in the same run.
        """
        self.flush()
        self._drain_after_next_log = True

    @rank_zero_only
    def flush(self) -> None:
        """Put every event logged so far on disk now (by closing the writer: see ``after_save_checkpoint``)."""
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Record how the session ended (HPARAMS shows it) and close the events file.

        Closing is the only way to be sure every queued event is on disk: tensorboardX's ``flush`` does
        not drain the writer thread's queue. A later log (``test_after_fit``) opens a second events file
        in the same run directory, which TensorBoard reads as the same run.
        """
        if self.hparams and not self._hparams_written:
            self._write_hparams()
        if self._hparams_written:  # (a writer closed at the last checkpoint reopens for this one record)
            self.experiment.file_writer.add_summary(_session_end(status))
        if self._experiment is not None:
            self.save()
            self.flush()


def _curated(experiment: Summary, shown: Mapping[str, str], metrics: Mapping[str, str]) -> Summary:
    """tensorboardX's experiment summary, re-encoded through TensorBoard's own protos (the same wire format), whose
    ``HParamInfo`` has the ``differs`` flag TensorBoard sorts the table's columns by: the ``shown`` keys are marked
    and named, so they are the default columns; the metrics get their names."""
    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in shown
        info.display_name = shown.get(info.name, "")
    for info in data.experiment.metric_infos:
        info.display_name = metrics.get(info.name.tag, "")
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment


def _session_end(status: str) -> Summary:
    content = HParamsPluginData(
        session_end_info=SessionEndInfo(status=_SESSION_STATUS.get(status, Status.STATUS_UNKNOWN)), version=0
    )
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])
