"""The tensorboardX logger's contract, checked through TensorBoard's reader and real processes."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import pytest
import torch
from conftest import event_files, load_events
from tensorboard.plugins.hparams import plugin_data_pb2

from loggers import TensorBoardXLogger


def test_paths_follow_save_dir_name_version(tmp_path: Path) -> None:
    logger = TensorBoardXLogger(save_dir=str(tmp_path), name="exp")
    assert (logger.save_dir, logger.name, logger.version) == (str(tmp_path), "exp", 0)
    assert logger.root_dir == str(tmp_path / "exp")
    assert logger.log_dir == str(tmp_path / "exp" / "version_0")
    assert TensorBoardXLogger(save_dir=str(tmp_path), name="exp").version == 1
    assert TensorBoardXLogger(save_dir=str(tmp_path), name="exp", version="named").log_dir.endswith("exp/named")


def test_trainer_log_dir_is_the_run_folder(tmp_path: Path) -> None:
    """Whatever writes to ``trainer.log_dir`` (the CLI config, a profiler, a callback) lands in the run."""
    from lightning.pytorch import Trainer

    logger = TensorBoardXLogger(save_dir=str(tmp_path), name="exp")
    assert Trainer(logger=logger, enable_progress_bar=False).log_dir == str(tmp_path / "exp" / "version_0")


def test_metrics_and_hparams_are_readable_by_tensorboard(tmp_path: Path) -> None:
    logger = TensorBoardXLogger(save_dir=str(tmp_path), name="exp")
    logger.log_hyperparams({"model": {"lr": 0.1, "layers": [1, 2]}, "data": {"name": "x", "flag": True}, "none": None})
    for step in range(3):
        logger.log_metrics({"train/loss": torch.tensor(1.0 / (step + 1)), "val/acc": 0.5 + step / 10}, step=step)
    logger.finalize("failed")
    events = load_events(Path(logger.log_dir))
    assert [round(e.value, 4) for e in events.Scalars("train/loss")] == [1.0, 0.5, 0.3333]
    assert [e.step for e in events.Scalars("val/acc")] == [0, 1, 2]
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.lr"].number_value == pytest.approx(0.1)
    assert hparams["model.layers"].string_value == "[1, 2]"
    assert hparams["data.flag"].bool_value is True
    assert "none" not in hparams
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == 2  # STATUS_FAILURE
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "val/acc" in {m.name.tag for m in experiment.metric_infos}
    assert (Path(logger.log_dir) / "hparams.yaml").is_file()


def test_logger_with_open_writer_pickles(tmp_path: Path) -> None:
    logger = TensorBoardXLogger(save_dir=str(tmp_path))
    logger.log_metrics({"a": 1.0}, step=0)
    clone = pickle.loads(pickle.dumps(logger))
    assert clone.log_dir == logger.log_dir
    clone.log_metrics({"a": 2.0}, step=1)  # the clone opens its own writer
    clone.finalize("success")
    logger.finalize("success")
    assert len(event_files(tmp_path)) == 2


def _claim_version(args: tuple[str, multiprocessing.synchronize.Barrier]) -> int:
    save_dir, barrier = args
    barrier.wait()
    return TensorBoardXLogger(save_dir=save_dir, name="race").version


def test_concurrent_runs_get_distinct_versions(tmp_path: Path) -> None:
    workers = 8
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(workers)
        with context.Pool(workers) as pool:
            versions = pool.map(_claim_version, [(str(tmp_path), barrier)] * workers)
    assert sorted(versions) == list(range(workers))
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == [f"version_{i}" for i in range(workers)]


def test_non_zero_rank_writes_nothing_and_takes_rank_zero_version(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TensorBoardXLogger(save_dir=str(tmp_path))
    assert logger.version is None  # not allocated off rank 0
    logger.log_metrics({"a": 1.0}, step=0)
    logger.agree_on_version(lambda _: 3)  # what trainer.strategy.broadcast would return from rank 0
    assert logger.version == 3
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
