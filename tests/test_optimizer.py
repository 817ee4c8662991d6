"""Optimizer and schedule from the config (LightningCLI injection, transformers' named schedules), and a
staged fine-tune that resumes after its unfreeze."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_events, run_cli, run_main, text_config, write_yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from vision_assets import TINY_RESNET

from common.errors import TbxFinetuneError
from loggers import TensorBoardXLogger
from loggers.health import NonFiniteGuard
from modules.vision import ImageClassifier, ResNetSpec


def lr_curve(run_dir: Path, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in load_events(run_dir).Scalars(tag)}


def test_sgd_and_cosine_schedule_from_the_command_line(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    config = write_yaml(tmp_path / "fit.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    result = run_cli(
        "fit", "--config", str(config),
        "--model.init_args.optimizer", "torch.optim.SGD",
        "--model.init_args.optimizer.init_args.momentum", "0.9",
        "--model.init_args.lr_schedule", "cosine",
        "--model.init_args.warmup_ratio", "0.25",
        "--trainer.max_steps", "8", "--trainer.limit_val_batches", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "test" / "version_0"
    decay = lr_curve(run_dir, "lr-SGD/decay")  # the LR monitor names the optimizer class: SGD is really used
    assert decay == lr_curve(run_dir, "lr-SGD/no_decay")
    peak, warmup, total = 1e-3, 2, 8  # text_config's learning_rate; warmup_ratio * max_steps
    for step, value in decay.items():
        if step < warmup:
            expected = peak * step / warmup
        else:
            expected = peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-12), step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.init_args.lr_schedule", "cosine_annealing"], "lr_schedule='cosine_annealing': use one of linear"),
        (["--model.init_args.learning_rate", "-0.001"], "learning_rate=-0.001: must be > 0"),
        (["--model.init_args.lr_schedule", "warmup_stable_decay"], "do not fit lr_schedule='warmup_stable_decay'"),
        (
            ["--model.init_args.lr_schedule", "cosine", "--model.init_args.lr_schedule_kwargs", "{num_cycle: 2}"],
            "unexpected keyword argument 'num_cycle'",
        ),
    ],
)
def test_bad_optimizer_settings_stop_before_training(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, args: list[str], message: str
) -> None:
    config = write_yaml(tmp_path / "fit.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    code, _, err = run_main("fit", "--config", str(config), *args)
    assert code == 2, err[-2000:]
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_staged_unfreeze_resumes_after_the_unfreeze(tmp_path: Path) -> None:
    """Epoch 0 head only, the backbone from epoch 1 on at a tenth of the rate; a run stopped after epoch 1 goes on
    from its checkpoint with the same optimizer groups, optimizer state and learning rates as an uninterrupted one.
    (Same weights too would need the data order restored: Lightning does not restore the RNG.)"""
    from test_vision import mnist_data

    class StopAfterEpoch(Callback):  # a run cut short with the same schedule (max_epochs=3) as the whole one
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            trainer.should_stop = trainer.current_epoch == 1

    def fit(folder: str, ckpt_path: str | None = None, stop: bool = False) -> tuple[Trainer, ImageClassifier]:
        torch.manual_seed(0)
        model = ImageClassifier(
            None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=1, freeze_backbone_epochs=1
        )
        trainer = Trainer(
            accelerator="cpu", max_epochs=3, limit_val_batches=0, log_every_n_steps=1,
            enable_progress_bar=False, enable_model_summary=False,
            logger=TensorBoardXLogger(save_dir=str(tmp_path / folder), version=0),
            callbacks=[ModelCheckpoint(dirpath=tmp_path / folder / "ckpt", save_last=True),
                       LearningRateMonitor(logging_interval="step"), *([StopAfterEpoch()] if stop else [])],
        )  # fmt: skip
        trainer.fit(
            model,
            datamodule=mnist_data(max_samples={"train": 64, "val": 8, "test": 8}, batch_size=32),
            ckpt_path=ckpt_path,
        )
        return trainer, model

    fit("whole")
    cut, _ = fit("cut", stop=True)
    assert cut.global_step == 4
    shutil.copy(tmp_path / "cut" / "ckpt" / "last.ckpt", tmp_path / "after_epoch_1.ckpt")
    trainer, resumed = fit("cut", ckpt_path=str(tmp_path / "after_epoch_1.ckpt"))
    assert trainer.global_step == 6 and all(p.requires_grad for p in resumed.backbone.parameters())
    groups = [(g["name"], g["lr"]) for g in trainer.optimizers[0].param_groups]
    assert [name for name, _ in groups] == ["decay", "no_decay", "backbone_decay", "backbone_no_decay"]
    assert groups[2][1] == pytest.approx(0.1 * groups[0][1])
    for tag in ("lr-AdamW/decay", "lr-AdamW/backbone_decay"):
        whole_curve = lr_curve(tmp_path / "whole" / "default" / "version_0", tag)
        assert lr_curve(tmp_path / "cut" / "default" / "version_0", tag) == pytest.approx(whole_curve)
        assert sorted(whole_curve) == list(range(6))
    checkpoint = torch.load(tmp_path / "after_epoch_1.ckpt", weights_only=True)["state_dict"]
    changed = [n for n, p in resumed.backbone.named_parameters() if not torch.equal(p, checkpoint[f"model.resnet.{n}"])]
    assert changed == [n for n, _ in resumed.backbone.named_parameters()]  # the backbone trained after the resume
    # Adam's state of a backbone weight counts both unfrozen epochs (2 + 2 steps): restored, not restarted
    backbone_state = trainer.optimizers[0].state[next(resumed.backbone.parameters())]
    assert int(backbone_state["step"]) == 4


def test_gradient_guard_refuses_a_grad_scaler(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """fp16's grad scaler (16-mixed on a GPU) makes non-finite gradients on purpose: the guard would stop the run."""
    from test_gradients import fit_tiny

    scaler = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(TbxFinetuneError, match="nonfinite.gradients=true with 16-mixed"):
        fit_tiny(tmp_path, tiny_bert, sentiment_csv, [NonFiniteGuard(gradients=True)], plugins=[scaler])
