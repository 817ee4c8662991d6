"""Safe defaults: no code from model folders or checkpoints runs unless the config says so."""

from __future__ import annotations

import inspect
import json
import pathlib
from pathlib import Path

import torch
from conftest import run_main, text_config, write_yaml

from datamodules import TextDataModule
from modules import TextClassifier


def test_trust_remote_code_is_off_by_default() -> None:
    for cls in (TextClassifier, TextDataModule):
        assert inspect.signature(cls).parameters["trust_remote_code"].default is False, cls


def test_model_folder_with_custom_code_is_not_run(tmp_path: Path, sentiment_csv: Path) -> None:
    """A folder whose config.json maps to its own Python file (``auto_map``): refused, the file never imported."""
    marker = tmp_path / "code_ran"
    folder = tmp_path / "custom_model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "not-a-transformers-model",
                "auto_map": {
                    "AutoConfig": "evil.EvilConfig",
                    "AutoModelForSequenceClassification": "evil.EvilModel",
                },
            }
        )
    )
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = text_config(folder, str(sentiment_csv), tmp_path / "runs")
    code, _, err = run_main("fit", "--config", str(write_yaml(tmp_path / "c.yaml", config)))
    assert code == 2, err[-3000:]
    assert "tbx-finetune: error: model.model_name_or_path=" in err and "trust_remote_code: true" in err, err[-3000:]
    assert not marker.exists()


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Checkpoints load with weights_only=True: a pickled callable is an error, never a call."""
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "payload": _RunsCodeWhenUnpickled(marker)}, ckpt)
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    for subcommand in ("fit", "validate"):
        code, _, err = run_main(
            subcommand, "--config", str(write_yaml(tmp_path / "c.yaml", config)), "--ckpt_path", str(ckpt)
        )
        assert code == 2, err[-3000:]
        assert "evil.ckpt" in err and "weights_only=True" in err, err[-3000:]
    assert not marker.exists()


def test_checkpoints_load_with_weights_only(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """The CLI passes weights_only=True to Lightning explicitly (the saved run config records it)."""
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["trainer"].update(max_steps=1, limit_val_batches=1, num_sanity_val_steps=0)
    code, _, err = run_main("fit", "--config", str(write_yaml(tmp_path / "c.yaml", config)))
    assert code == 0, err[-3000:]
    saved = (tmp_path / "runs" / "test" / "version_0" / "config.yaml").read_text()
    assert "weights_only: true" in saved
    ckpt = tmp_path / "runs" / "test" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 1
