"""GradNormMonitor: what TensorBoard reads back equals gradients measured independently in the test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_events, run_cli, text_config, write_yaml, writers
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins.precision import MixedPrecision
from tiny_assets import build_tiny_bert

from common.errors import TbxFinetuneError
from datamodules import TextDataModule
from loggers import TensorBoardXLogger
from loggers.gradients import GradNormMonitor, layer_of
from loggers.health import NonFiniteGuard
from modules import TextClassifier


class GradientRecorder(Callback):
    """Independent record of every gradient: after backward (maybe scaled) and before the step (unscaled)."""

    def __init__(self) -> None:
        self.after_backward: dict[int, dict[str, float]] = {}
        self.before_step: dict[int, dict[str, float]] = {}

    @staticmethod
    def _norms(module) -> dict[str, float]:
        return {n: torch.linalg.vector_norm(p.grad).item() for n, p in module.named_parameters() if p.grad is not None}

    def on_after_backward(self, trainer, pl_module) -> None:
        self.after_backward[trainer.global_step] = self._norms(pl_module)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before_step[trainer.global_step] = self._norms(pl_module)


class PoisonGradient(Callback):
    """Puts a NaN into one gradient at one optimizer step (registered before the monitor)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.at_step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")


def fit_tiny(tmp_path: Path, model_dir: Path, csv: Path, callbacks: list, **trainer_kwargs) -> TensorBoardXLogger:
    datamodule = TextDataModule(
        data_files=str(csv), text_column="sentence", label_column="sentiment", tokenizer=str(model_dir), batch_size=8
    )
    module = TextClassifier(str(model_dir), num_labels=2, learning_rate=1e-3)
    logger = TensorBoardXLogger(save_dir=str(tmp_path / "runs"))
    options = {"max_steps": 6, "limit_val_batches": 0, "enable_checkpointing": False, "enable_progress_bar": False}
    Trainer(logger=logger, callbacks=callbacks, **{**options, **trainer_kwargs}).fit(module, datamodule)
    return logger


def assert_matches_record(events, recorded: dict[int, dict[str, float]], bins: int) -> None:
    histograms = {h.step: h.histogram_value for h in events.Histograms("grad_norm/per_param")}
    assert histograms and set(histograms) <= set(recorded)
    for step, hist in histograms.items():
        norms = np.array([v for v in recorded[step].values() if math.isfinite(v)])
        assert hist.num == len(norms)
        assert hist.min == pytest.approx(norms.min(), rel=1e-5)
        assert hist.max == pytest.approx(norms.max(), rel=1e-5)
        assert hist.sum == pytest.approx(norms.sum(), rel=1e-5)
        assert hist.sum_squares == pytest.approx((norms**2).sum(), rel=1e-5)
        expected_counts, _ = np.histogram(norms, bins=bins, range=(norms.min(), norms.max()))
        # allow a value sitting exactly on an edge to fall on either side (float32 on device vs float64 here)
        assert np.abs(np.array(hist.bucket) - expected_counts).sum() <= 2
        assert sum(hist.bucket) == len(norms)
    totals = {e.step: e.value for e in events.Scalars("grad_norm/total")}
    for step, total in totals.items():
        assert total == pytest.approx(math.sqrt(sum(v * v for v in recorded[step].values())), rel=1e-5)
    for step in totals:
        layers: dict[str, float] = {}
        for name, norm in recorded[step].items():
            layers[layer_of(name)] = layers.get(layer_of(name), 0.0) + norm * norm
        for layer, squared in layers.items():
            logged = {e.step: e.value for e in events.Scalars(f"grad_norm/{layer}")}
            assert logged[step] == pytest.approx(math.sqrt(squared), rel=1e-5)


def test_per_param_and_layer_norms_equal_independent_vector_norms(tmp_path, tiny_bert, sentiment_csv) -> None:
    recorder = GradientRecorder()
    monitor = GradNormMonitor(every_n_steps=2, bins=16, gradient_histograms=True, weight_histograms=True)
    logger = fit_tiny(tmp_path, tiny_bert, sentiment_csv, [monitor, recorder])
    events = load_events(Path(logger.log_dir))
    assert [h.step for h in events.Histograms("grad_norm/per_param")] == [0, 2, 4]
    assert_matches_record(events, recorder.before_step, bins=16)
    tags = set(events.Tags()["histograms"])
    assert {
        "grad/bert.encoder.layer.0",
        "weight/bert.encoder.layer.1",
        "grad/classifier",
        "weight/bert.embeddings",
    } <= tags
    assert events.Scalars("grad_norm/nonfinite")[0].value == 0.0
    assert monitor.alerts_fired == 0


def test_norms_are_unscaled_under_fp16_grad_scaling(tmp_path, tiny_bert, sentiment_csv) -> None:
    """With a GradScaler active, backward sees scaled gradients; the monitor must log the unscaled ones."""
    recorder = GradientRecorder()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    logger = fit_tiny(tmp_path, tiny_bert, sentiment_csv, [GradNormMonitor(every_n_steps=1, bins=16), recorder],
                      plugins=[precision], max_steps=3)  # fmt: skip
    events = load_events(Path(logger.log_dir))
    for step, total in ((e.step, e.value) for e in events.Scalars("grad_norm/total")):
        scaled = math.sqrt(sum(v * v for v in recorder.after_backward[step].values()))
        assert scaled == pytest.approx(1024.0 * total, rel=1e-2)  # the scaler really was active
    assert_matches_record(events, recorder.before_step, bins=16)


def test_bf16_mixed_norms_match(tmp_path, tiny_bert, sentiment_csv) -> None:
    recorder = GradientRecorder()
    logger = fit_tiny(tmp_path, tiny_bert, sentiment_csv, [GradNormMonitor(every_n_steps=1, bins=16), recorder],
                      precision="bf16-mixed", max_steps=3)  # fmt: skip
    assert_matches_record(load_events(Path(logger.log_dir)), recorder.before_step, bins=16)


def test_accumulation_logs_once_per_optimizer_step(tmp_path, tiny_bert, sentiment_csv) -> None:
    recorder = GradientRecorder()
    logger = fit_tiny(tmp_path, tiny_bert, sentiment_csv, [GradNormMonitor(every_n_steps=1), recorder],
                      accumulate_grad_batches=3, max_steps=4)  # fmt: skip
    events = load_events(Path(logger.log_dir))
    assert [h.step for h in events.Histograms("grad_norm/per_param")] == [0, 1, 2, 3]
    assert [e.step for e in events.Scalars("grad_norm/total")] == [0, 1, 2, 3]
    assert sorted(recorder.after_backward) == [0, 1, 2, 3]  # 12 backward passes, keyed by optimizer step


def test_nan_gradient_alerts_and_histogram_stays_valid(tmp_path, tiny_bert, sentiment_csv, caplog) -> None:
    recorder = GradientRecorder()
    monitor = GradNormMonitor(every_n_steps=1, bins=16)
    logger = fit_tiny(tmp_path, tiny_bert, sentiment_csv, [PoisonGradient(at_step=2), monitor, recorder], max_steps=3)
    events = load_events(Path(logger.log_dir))
    nonfinite = {e.step: e.value for e in events.Scalars("grad_norm/nonfinite")}
    assert nonfinite == {0: 0.0, 1: 0.0, 2: 1.0}
    poisoned = {h.step: h.histogram_value for h in events.Histograms("grad_norm/per_param")}[2]
    assert poisoned.num == len(recorder.before_step[2]) - 1
    assert all(math.isfinite(x) for x in (poisoned.min, poisoned.max, poisoned.sum, poisoned.sum_squares))
    assert 2 not in {e.step for e in events.Scalars("grad_norm/total")}  # a NaN total is not plotted
    text = events.Tensors("health/nonfinite")
    assert [t.step for t in text] == [2]
    assert b"non-finite" in text[0].tensor_proto.string_val[0]
    assert {e.step: e.value for e in events.Scalars("health/alerts")}[2] >= 1
    assert any("nonfinite" in r.getMessage() for r in caplog.records)


def test_nonfinite_guard_stops_training_at_a_poisoned_gradient(tmp_path, tiny_bert, sentiment_csv) -> None:
    monitor = GradNormMonitor(every_n_steps=1)
    guard = NonFiniteGuard(gradients=True)
    with pytest.raises(TbxFinetuneError, match=r"gradient of model\..* became non-finite at step 1"):
        fit_tiny(tmp_path, tiny_bert, sentiment_csv, [PoisonGradient(at_step=1), guard, monitor], max_steps=20)
    events = load_events(next((tmp_path / "runs").glob("default/version_*")))
    assert {e.step for e in events.Scalars("grad_norm/total")} == {0}  # stopped before step 1's update
    alert = events.Tensors("health/nonfinite")
    assert [t.step for t in alert] == [1] and b"became non-finite" in alert[0].tensor_proto.string_val[0]


def test_layer_grouping() -> None:
    assert layer_of("model.bert.encoder.layer.3.attention.self.query.weight") == "bert.encoder.layer.3"
    assert layer_of("model.bert.embeddings.word_embeddings.weight") == "bert.embeddings"
    assert layer_of("model.classifier.bias") == "classifier"
    assert layer_of("model.resnet.encoder.stages.1.layers.0.shortcut.convolution.weight") == "resnet.encoder.stages.1"
    assert layer_of("model.bert.encoder.layer.3.output.dense.weight", depth=5) == "bert.encoder.layer.3.output"


def test_ddp_norms_equal_single_process_with_same_global_batch(tmp_path, sentiment_csv) -> None:
    """2 ranks x batch 8 see the same global batches as 1 process x batch 16, so gradients must agree.

    Lightning always gives DDP training a shuffled DistributedSampler; the one-process run uses the same
    sampler (``ddp`` on one device), whose batch k is the union of the two ranks' batch k. No dropout.
    """
    model = build_tiny_bert(tmp_path / "bert_no_dropout", dropout=0.0)
    totals = {}
    for name, batch, devices in (("single", 16, "1"), ("ddp", 8, "2")):
        config = text_config(model, str(sentiment_csv), tmp_path / name, batch_size=batch)
        result = run_cli("fit", "--config", str(write_yaml(tmp_path / f"{name}.yaml", config)),
                         "--grad_norms.every_n_steps", "1", "--trainer.max_steps", "3",
                         "--trainer.limit_val_batches", "0",
                         "--trainer.strategy", "ddp", "--trainer.devices", devices)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(writers(tmp_path / name)) == 1  # one writer, also under DDP
        events = load_events(tmp_path / name / "test" / "version_0")
        totals[name] = {e.step: e.value for e in events.Scalars("grad_norm/total")}
        assert [h.step for h in events.Histograms("grad_norm/per_param")] == [0, 1, 2]
    assert totals["single"].keys() == totals["ddp"].keys() == {0, 1, 2}
    for step, value in totals["single"].items():
        assert totals["ddp"][step] == pytest.approx(value, rel=1e-4)
