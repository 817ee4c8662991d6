"""Large batches: under gradient accumulation every TensorBoard x-axis counts optimizer steps."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO, load_events, run_cli, text_config, write_yaml

FRAGMENTS = REPO / "configs" / "trainer"


def test_accumulation_logs_every_tag_at_optimizer_steps(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["trainer"].update(max_steps=4, log_every_n_steps=1, limit_val_batches=1)
    config["grad_norms"] = {"every_n_steps": 1, "gradient_histograms": True}  # the CLI's own monitor
    result = run_cli(
        "fit", "--config", str(write_yaml(tmp_path / "fit.yaml", config)),
        "--config", str(FRAGMENTS / "accumulate.yaml"), "--config", str(FRAGMENTS / "clip.yaml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    events = load_events(tmp_path / "runs" / "test" / "version_0")
    optimizer_steps = [0, 1, 2, 3]  # max_steps=4 optimizer steps = 4 x 4 accumulated batches (9 per epoch)
    for tag in ("train/loss", "lr-AdamW/decay", "grad_norm/total", "grad_norm/bert.encoder.layer.0"):
        assert [e.step for e in events.Scalars(tag)] == optimizer_steps, tag
    assert [e.step for e in events.Histograms("grad_norm/per_param")] == optimizer_steps
    assert [e.step for e in events.Histograms("grad/classifier")] == optimizer_steps
    # validation at the end of epoch 0: 9 batches → optimizer steps 0, 1 and 2 (the last, partial window)
    assert [e.step for e in events.Scalars("val/acc")] == [2]
    saved = yaml.safe_load((tmp_path / "runs" / "test" / "version_0" / "config.yaml").read_text())
    assert (saved["trainer"]["accumulate_grad_batches"], saved["trainer"]["gradient_clip_val"]) == (4, 1.0)
