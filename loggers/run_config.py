"""Saves LightningCLI's config into the run directory and hands it to the logger as hyperparameters.

Lightning's own ``SaveConfigCallback`` writes ``config.yaml`` to ``trainer.log_dir``, which is the run's own
``version_N`` folder because ``TensorBoardXLogger`` is a ``TensorBoardLogger``. This subclass makes every DDP
rank agree on that folder first (our version is allocated on rank 0 only), writes nothing for a run without a
logger nor for validate/test/predict (they add metrics to the run of their checkpoint, whose config and HPARAMS
session stay the fit's), and sends the flattened config to the HPARAMS tab.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from common.lightning_state import flat_params
from loggers.record import markdown_table, tensorboard_records
from loggers.tensorboardx import TensorBoardXLogger

LABEL_COUNTS_TAG = "data/label_counts"

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

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None or stage != "fit":
            return  # no run folder, or validate/test/predict adding to a run: its fit's config and HPARAMS stand
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardXLogger):
                logger.agree_on_version(trainer.strategy.broadcast)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Runs on global rank 0 only, after ``config.yaml`` is written (Lightning's contract for this hook)."""
        flat = flat_params(self.config.as_dict())
        hparams = {k: v for k, v in flat.items() if not k.startswith(_NOT_HPARAMS)}
        trainer.logger.log_hyperparams({**hparams, **derived_hparams(flat, trainer)})
        counts = getattr(trainer.datamodule, "label_counts", None)
        if callable(counts) and not trainer.ckpt_path:  # (a resumed run has it already)
            # ``| split | <class> … |``, one row per split: readable in TensorBoard's TEXT tab, parseable by the report
            header = ["split", *(str(name).replace("|", "\\|") for name in trainer.datamodule.label_names)]
            table = markdown_table(header, ([split, *row] for split, row in counts().items()))
            for record in tensorboard_records(trainer.loggers):
                record.text(LABEL_COUNTS_TAG, table, 0)


def derived_hparams(flat: dict, trainer: Trainer) -> dict:
    """What the HPARAMS table's first columns show and no single config key holds: the batch one optimizer step
    sees (per-device batch × accumulation × devices) and the model's name (its path, else its class)."""
    model = flat.get("model.init_args.model_name_or_path") or str(flat.get("model.class_path")).rsplit(".")[-1]
    derived = {"model": model}
    if isinstance(batch := flat.get("data.init_args.batch_size"), int):
        derived["batch_size_effective"] = batch * trainer.accumulate_grad_batches * trainer.world_size
    return {k: v for k, v in derived.items() if v not in ("", "None")}
