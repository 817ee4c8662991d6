"""Shared fixtures: a tiny real BERT checkpoint, a small learnable corpus and a CLI runner.

Everything is built locally and loaded through the public paths (``from_pretrained``, ``load_dataset``,
``python -m app.cli``), so the tests need no network and exercise what users run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tiny_assets import build_tiny_bert, write_sentiment_csv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentiment_csv(tmp_path_factory.mktemp("data") / "reviews.csv", rows=160)


def text_config(model: Path, data_files, save_dir: Path, **data_overrides) -> dict:
    """A complete fit config for the tiny model; tests override single keys on the command line."""
    return {
        "seed_everything": 7,
        "model": {
            "class_path": "modules.TextClassifier",
            "init_args": {"model_name_or_path": str(model), "learning_rate": 1e-3, "warmup_ratio": 0.3},
        },
        "data": {
            "class_path": "datamodules.TextDataModule",
            "init_args": {
                "data_files": data_files,
                "text_column": "sentence",
                "label_column": "sentiment",
                "batch_size": 16,
                "max_length": 32,
                **data_overrides,
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "log_every_n_steps": 2,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "loggers.TensorBoardXLogger",
                "init_args": {"save_dir": str(save_dir), "name": "test"},
            },
        },
    }


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m app.cli ...`` in a subprocess, offline, as a user would run it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, log: Path) -> subprocess.Popen:
    """``python -m app.cli ...`` started in the background (to be signalled, killed or raced); output to ``log``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, stdout=out, stderr=out)


def run_main(*args: str) -> tuple[int, str, str]:
    """``app.cli.main(args)`` in this process → (exit code, stdout, stderr).

    For runs that stop while parsing or validating (no training): seconds cheaper than ``run_cli``, as the
    imports are paid once per test session.
    """
    import contextlib
    import io
    from unittest import mock

    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(sys, "argv", ["tbx-finetune"]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def event_files(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


def writers(root: Path) -> set[tuple[Path, str]]:
    """(folder, process id) of every events file under ``root``: one process per run folder means one writer
    (the logger opens a new file after each checkpoint, ``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {(f.parent, f.name.split(".")[-2]) for f in event_files(root)}


def load_events(log_dir: Path):
    """TensorBoard's own reader over one run directory, keeping every point."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator
