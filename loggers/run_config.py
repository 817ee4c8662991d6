"""Saves LightningCLI's config into the run directory and hands it to the logger as hyperparameters.

Lightning's own ``SaveConfigCallback`` writes to ``trainer.log_dir``, which for any logger other than its
stock TensorBoard/CSV loggers is the shared ``save_dir``: the second run then refuses to overwrite the first
run's ``config.yaml``. This subclass writes into the run's own ``version_N`` folder, makes every DDP rank
agree on that folder first, and sends the flattened config to the HPARAMS tab.
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from common.lightning_state import flat_params
from loggers.tensorboardx import TensorBoardXLogger

_NOT_HPARAMS = (
    "config",
    "ckpt_path",
    "trainer.logger",
    "trainer.callbacks",
    # replaced per parameter group by model.init_args.learning_rate / weight_decay (modules/classifier.py)
    "model.init_args.optimizer.init_args.lr",
    "model.init_args.optimizer.init_args.weight_decay",
)
"""Config keys that describe plumbing, not the experiment, or are not used, and would only clutter the HPARAMS
table."""


class RunConfigCallback(SaveConfigCallback):
    """``config.yaml`` in ``runs/<name>/version_<n>/`` plus the flattened config as the run's hparams."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardXLogger):
                logger.agree_on_version(trainer.strategy.broadcast)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Runs on global rank 0 only (Lightning's contract for this hook)."""
        logger = trainer.logger
        if logger is None:
            return
        log_dir = getattr(logger, "log_dir", None) or logger.save_dir
        if log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            self.parser.save(
                self.config,
                os.path.join(log_dir, self.config_filename),
                skip_none=False,
                overwrite=self.overwrite,
                multifile=self.multifile,
            )
        flat = flat_params(self.config.as_dict())
        logger.log_hyperparams({k: v for k, v in flat.items() if not k.startswith(_NOT_HPARAMS)})
