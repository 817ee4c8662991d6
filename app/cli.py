"""``python -m app.cli fit|validate|test|predict --config X.yaml``: LightningCLI with our defaults.

The CLI links what the data knows to the model (number and names of labels, image channels) and what the
model knows to the data (its tokenizer or image processor), so a config states each fact once. A link whose
source or target the chosen classes lack (a text datamodule has no ``image_processor``) is skipped by
jsonargparse, so both model families share one CLI. It installs our tensorboardX logger, a
checkpoint on ``val/acc``, an LR monitor, a rich progress bar and a prediction writer by default.
"""

from __future__ import annotations

import errno
import math
import sys
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import LambdaCallback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from app.config_checks import check_config
from app.console import ModelSummaryTable, quiet_known_noise
from app.lifecycle import (
    CheckpointRequest,
    ExactResume,
    LastCheckpoint,
    PredictionWriter,
    best_checkpoint,
    best_weights,
)
from common.errors import TbxFinetuneError, causes
from loggers.gradients import GradNormMonitor
from loggers.health import NonFiniteGuard
from loggers.run_config import RunConfigCallback
from loggers.throughput import PerfMonitor
from loggers.visuals import ValidationVisuals
from modules.classifier import ClassificationModule

DEFAULT_LOGGER = {"class_path": "loggers.TensorBoardXLogger", "init_args": {"save_dir": "runs"}}


class FinetuneCLI(LightningCLI):
    """LightningCLI whose arguments are linked so that no fact is configured twice."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.init_args.num_channels", apply_on="instantiate")
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer")
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.image_processor")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's, from step 1 on
                "checkpoint.filename": "epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # the visual record is always wired in and configured by two top-level keys, so config fragments
        # compose (`--config quickstart.yaml --config visuals.yaml`) instead of replacing trainer.callbacks
        parser.add_lightning_class_args(GradNormMonitor, "grad_norms")
        parser.add_lightning_class_args(ValidationVisuals, "visuals")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint in the same run (test/* metrics join the HPARAMS table).",
        )
        parser.add_argument(
            "--export_pretrained",
            type=str | None,
            default=None,
            help="After fit, write the best checkpoint's network as a Hugging Face folder here: config.json with "
            "the label names, weights, and the tokenizer (text) or preprocessor_config.json (images). It loads as "
            "another config's model.init_args.model_name_or_path or with from_pretrained; a text folder also in "
            "transformers.pipeline('text-classification', model=<folder>).",
        )

    def before_fit(self) -> None:
        if self.config[self.subcommand].get("export_pretrained") and not hasattr(self.model, "export_pretrained"):
            raise TbxFinetuneError(f"--export_pretrained: {type(self.model).__name__} has no export; drop the option")
        if (self.config[self.subcommand].get("trainer") or {}).get("log_every_n_steps") is None:
            self.trainer.callbacks.append(LambdaCallback(on_train_start=log_about_20_points))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Load ``--ckpt_path`` safely right after parsing: LightningCLI reads its hyperparameters next."""
        super().parse_arguments(parser, args)
        self._ckpt = CheckpointRequest()
        if self.config.get("subcommand"):
            self._ckpt.parse(self.config[self.config.subcommand])

    def before_instantiate_classes(self) -> None:
        """Config values Lightning would not turn into a clean error, then ``--ckpt_path`` (``app.lifecycle``)."""
        check_config(self.subcommand, self.config[self.subcommand])
        if self._ckpt.resolve(self.subcommand, self.config[self.subcommand]):
            self.save_config_kwargs["overwrite"] = True  # the run's config.yaml, now with the ckpt_path resumed

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self._ckpt.apply(self.model, self.trainer, self.config[self.subcommand].get("ckpt_path"))

    def after_fit(self) -> None:
        """``--test_after_fit``: test the best checkpoint in the same run. ``--export_pretrained``: load the best
        checkpoint's weights (else keep the last); the module writes its folder on global rank 0.

        Both families are called the same way, ``export_pretrained(folder, datamodule)``: the module reads what
        it saves beside the weights from the datamodule (text: its ``tokenizer``; images: its ``image_size``).
        """
        if self.config[self.subcommand].get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best_checkpoint(self.trainer) or None)
        folder = self.config[self.subcommand].get("export_pretrained")
        if folder:
            best, state = best_weights(self.trainer)
            if state is not None:
                self.model.load_state_dict(state)
            if self.trainer.is_global_zero:
                self.model.export_pretrained(folder, self.datamodule)
            rank_zero_info(f"exported {best or 'the last weights'} to {folder}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the rich progress bar and our model summary unless the config turned them off."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer") or {}
        extra = [RichProgressBar()] if trainer_config.get("enable_progress_bar") is not False else []
        extra += [ModelSummaryTable()] if trainer_config.get("enable_model_summary") is not False else []
        if extra and "callbacks" not in kwargs:
            kwargs["callbacks"] = [*(trainer_config.get("callbacks") or []), *extra]
        return super().instantiate_trainer(**kwargs)


def log_about_20_points(trainer: Trainer, *_: Any) -> None:
    """Unless the config says, log every ``steps / 20`` steps (at most Lightning's default 50): at 50, a run shorter
    than 50 steps would draw no training curve at all."""
    steps = trainer.estimated_stepping_batches
    if math.isfinite(steps):
        trainer.log_every_n_steps = max(1, min(50, int(steps) // 20))


def build_cli(
    args: list[str] | None,
    cli_class: type[FinetuneCLI] = FinetuneCLI,
    callbacks: tuple[Callback, ...] = (),
    exit_on_error: bool = True,
) -> FinetuneCLI:
    """Parse ``args`` (``fit --config …``; ``None``: the command line) and run the subcommand: ``main``'s path, and
    each sweep trial's (``app.sweep``: its own CLI subclass, a callback reporting to Optuna, parse errors raised)."""
    return cli_class(
        model_class=ClassificationModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfigCallback,
        trainer_defaults={
            "logger": DEFAULT_LOGGER,
            "callbacks": [LearningRateMonitor(logging_interval="step"), ExactResume(), PerfMonitor(), *callbacks],
        },
        # one way to choose the optimizer: model.init_args.optimizer (+ lr_schedule); LightningCLI's own
        # top-level --optimizer/--lr_scheduler would replace configure_optimizers and its parameter groups
        auto_configure_optimizers=False,
        # `--trainer.max_epoch` must be an error, not max_epochs
        parser_kwargs={"allow_abbrev": False, "exit_on_error": exit_on_error},
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point; our input errors are printed as one line, without a traceback, exit code 2."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] in (["report"], ["sweep"]):  # no Trainer of their own: not LightningCLI subcommands
        from app.report import main as report
        from app.sweep import main as sweep

        return {"report": report, "sweep": sweep}[argv[0]](argv[1:])  # both exit 2 on our errors, as below
    quiet_known_noise()
    try:
        build_cli(args)  # None: LightningCLI reads sys.argv itself (a list beside a command line makes it warn)
    except Exception as err:
        ours = user_error(err)
        if ours is None:
            raise
        print(f"tbx-finetune: error: {ours}", file=sys.stderr)
        sys.exit(2)


def user_error(err: BaseException) -> TbxFinetuneError | None:
    """The one line a user should see for ``err`` (ours, Lightning's refusal, a file system fault), else ``None``.

    jsonargparse and Lightning wrap what they raise while instantiating or running, so the whole chain of causes is
    searched: ours first, then a disk full, read-only or no permission mid-run (Lightning has closed the logger)."""
    ours = next((e for e in causes(err) if isinstance(e, TbxFinetuneError | MisconfigurationException)), None)
    if isinstance(ours, MisconfigurationException):  # Lightning's word for a Trainer argument it refuses
        return TbxFinetuneError(" ".join(str(ours).split()))
    fault = next((e for e in causes(err) if isinstance(e, OSError) and e.errno in _FILE_SYSTEM_ERRNOS), None)
    if ours is not None or fault is None:
        return ours
    return TbxFinetuneError(
        f"{fault.strerror}: {fault.filename or 'a file of the run'}; the run stopped there. What it wrote before "
        "(events, checkpoints) is closed and readable: free space or fix permissions, then continue with "
        "--ckpt_path last"
    )


_FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


if __name__ == "__main__":
    main()
