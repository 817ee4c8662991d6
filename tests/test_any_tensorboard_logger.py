"""The callbacks' record through Lightning's stock ``TensorBoardLogger`` (a ``torch.utils.tensorboard`` writer),
read back with TensorBoard's own reader; a logger that is not TensorBoard-like gets scalars and never crashes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import event_files, load_events
from google.protobuf import text_format
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tensorboard.util import tensor_util
from test_gradients import PoisonGradient
from torch.utils.tensorboard import SummaryWriter
from vision_assets import MNIST_CSV, TINY_RESNET

from common.errors import TbxFinetuneError
from datamodules import TextDataModule
from datamodules.vision import ImageDataModule
from loggers.gradients import GradNormMonitor
from loggers.health import NonFiniteGuard
from loggers.visuals import SAMPLE_TAG, ValidationVisuals
from modules import TextClassifier
from modules.vision import ImageClassifier, ResNetSpec

VAL_ROWS = 15  # the validation split of conftest.sentiment_csv
GRAD_STEPS = [0, 2, 4, 6]  # every 2nd of 2 epochs x 4 optimizer steps


def all_visuals() -> ValidationVisuals:
    return ValidationVisuals(
        confusion_matrix=True, pr_curves=True, misclassified=VAL_ROWS, embeddings=64, logit_histograms=True, graph=True
    )


def alerting_monitor() -> GradNormMonitor:
    """Every layer counts as vanishing (threshold 1e9): alerts at the first log step, ``dead`` at the second."""
    return GradNormMonitor(every_n_steps=2, bins=16, gradient_histograms=True, vanish_threshold=1e9, dead_patience=2)


def fit_text(logger, tiny_bert: Path, csv_path: Path, callbacks: list, **trainer_kwargs) -> list[str]:
    """Two short epochs (4 steps each) of the tiny BERT, validating on the 15-row split; returns the label names."""
    seed_everything(7)
    data = TextDataModule(
        data_files=str(csv_path), text_column="sentence", label_column="sentiment", tokenizer=str(tiny_bert),
        batch_size=8,
    )  # fmt: skip
    names = list(data.label_names)
    module = TextClassifier(str(tiny_bert), num_labels=len(names), label_names=names, learning_rate=1e-3)
    options = {
        "accelerator": "cpu", "max_epochs": 2, "limit_train_batches": 4, "log_every_n_steps": 2,
        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
    }  # fmt: skip
    Trainer(logger=logger, callbacks=callbacks, **{**options, **trainer_kwargs}).fit(module, data)
    return names


def test_stock_tensorboard_logger_gets_the_whole_record(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="stock")
    monitor = alerting_monitor()
    names = fit_text(logger, tiny_bert, sentiment_csv, [all_visuals(), monitor])
    assert isinstance(logger.experiment, SummaryWriter)  # torch's writer, not tensorboardX's
    run = Path(logger.log_dir)
    events = load_events(run)
    accuracies = events.Scalars("val/acc")
    val_steps = [e.step for e in accuracies]
    assert len(val_steps) == 2 and val_steps[0] > 0  # two validation epochs, none from the sanity check

    # images and per-class scalars at the validation steps
    assert [i.step for i in events.Images("val/confusion_matrix")] == val_steps
    assert events.Images("val/confusion_matrix")[-1].width >= 400
    for name in names:
        for kind in ("recall", "precision"):
            points = events.Scalars(f"val/{kind}/{name}")
            assert [p.step for p in points] == val_steps and all(0.0 <= p.value <= 1.0 for p in points)

    # PR curves (TensorBoard's layout: TP, FP, TN, FN, precision, recall) and logit histograms
    for name in names:
        curves = events.Tensors(f"val/pr/{name}")
        assert [c.step for c in curves] == val_steps
        tp, fp, tn, fn, precision, recall = tensor_util.make_ndarray(curves[-1].tensor_proto)
        np.testing.assert_allclose(tp + fp + tn + fn, VAL_ROWS)
        assert recall[0] == 1.0 and np.all((0 <= precision) & (precision <= 1))
        logits = events.Histograms(f"val/logits/{name}")
        assert [h.step for h in logits] == val_steps and all(h.histogram_value.num == VAL_ROWS for h in logits)

    # the gradient monitor: histograms and scalars at its own steps
    assert [h.step for h in events.Histograms("grad_norm/per_param")] == GRAD_STEPS
    assert [h.step for h in events.Histograms("grad/classifier")] == GRAD_STEPS
    assert [e.step for e in events.Scalars("grad_norm/total")] == GRAD_STEPS
    assert {"train/loss", "grad_norm/classifier", "health/alerts"} <= set(events.Tags()["scalars"])

    # text: misclassified examples at each validation step with mistakes, health alerts at their log steps
    tables = events.Tensors("val/misclassified/text_summary")
    assert [t.step for t in tables] == [e.step for e in accuracies if e.value < 1.0]
    for table, accuracy in zip(tables, (e for e in accuracies if e.value < 1.0), strict=True):
        rows = table.tensor_proto.string_val[0].decode().splitlines()[2:]
        assert len(rows) == round((1 - accuracy.value) * VAL_ROWS)
    assert {t.step for t in events.Tensors("health/vanishing/text_summary")} == {0}
    assert {t.step for t in events.Tensors("health/dead/text_summary")} == {2}
    assert monitor.alerts_fired == len(events.Tensors("health/vanishing/text_summary")) * 2

    # the projector's files beside the events, and the graph
    config = text_format.Parse((run / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert len(config.embeddings) == 2
    vectors = np.loadtxt(run / config.embeddings[-1].tensor_path, delimiter="\t", ndmin=2)
    assert vectors.shape == (VAL_ROWS, 32)
    assert any(node.name.startswith("input/") for node in events.Graph().node)


def test_nonfinite_guard_alert_reaches_the_stock_logger(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="stock")
    guard = NonFiniteGuard(gradients=True)
    with pytest.raises(TbxFinetuneError, match=r"became non-finite at step 1"):
        fit_text(logger, tiny_bert, sentiment_csv, [PoisonGradient(at_step=1), guard], limit_val_batches=0)
    alert = load_events(Path(logger.log_dir)).Tensors("health/nonfinite/text_summary")
    assert [t.step for t in alert] == [1] and b"training stopped" in alert[0].tensor_proto.string_val[0]


def test_csv_logger_gets_scalars_only(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Every visual and alert on, a logger without a TensorBoard writer: no crash, the scalars arrive."""
    logger = CSVLogger(save_dir=str(tmp_path), name="csv")
    monitor = alerting_monitor()
    names = fit_text(logger, tiny_bert, sentiment_csv, [all_visuals(), monitor, NonFiniteGuard(gradients=True)])
    with (Path(logger.log_dir) / "metrics.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per_class = {f"val/{kind}/{name}" for kind in ("recall", "precision") for name in names}
    assert {"val/acc", "grad_norm/total", "health/alerts"} | per_class <= set(rows[0])
    assert len([r for r in rows if r[f"val/recall/{names[0]}"]]) == 2  # once per validation epoch
    assert monitor.alerts_fired > 0 and not event_files(tmp_path)


def test_image_model_sample_grid_and_misclassified_digits_reach_the_stock_logger(tmp_path: Path) -> None:
    """The image model's augmented-input grid and the misclassified-digit grid, beside a CSV logger."""
    stock = TensorBoardLogger(save_dir=str(tmp_path), name="stock")
    table = CSVLogger(save_dir=str(tmp_path), name="csv")
    seed_everything(7)
    data = ImageDataModule(
        data_files=MNIST_CSV, label_column="last", max_samples={"train": 64, "val": 32, "test": 8}, batch_size=32
    )
    model = ImageClassifier(None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=1)
    visuals = ValidationVisuals(confusion_matrix=True, misclassified=8)
    Trainer(
        logger=[stock, table], callbacks=[visuals], accelerator="cpu", max_epochs=1, log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    ).fit(model, data)  # fmt: skip
    events = load_events(Path(stock.log_dir))
    val_steps = [e.step for e in events.Scalars("val/acc")]
    assert [g.step for g in events.Images(SAMPLE_TAG)] == [0]
    assert events.Images(SAMPLE_TAG)[0].width > 4 * 28  # a tiled grid of 28x28 digits
    assert [i.step for i in events.Images("val/misclassified")] == val_steps
    assert [i.step for i in events.Images("val/confusion_matrix")] == val_steps
    with (Path(table.log_dir) / "metrics.csv").open(encoding="utf-8") as f:
        assert {"val/acc", "val/recall/3", "val/precision/3"} <= set(next(csv.DictReader(f)))
