"""Two-process CPU DDP (gloo) through the CLI: one run directory, one events file, one writer."""

from __future__ import annotations

from pathlib import Path

from conftest import event_files, load_events, run_cli, text_config, write_yaml


def test_ddp_cpu_two_processes_write_one_events_file(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "ddp.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    result = run_cli(
        "fit", "--config", str(config),
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tmp_path / "runs" / "test"
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    files = event_files(tmp_path / "runs")
    assert len(files) == 1
    events = load_events(runs / "version_0")
    assert {"train/loss", "val/acc"} <= set(events.Tags()["scalars"])
    # 129 train rows over 2 ranks of batch 16 → 5 optimizer steps; every step index is unique
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps))
    assert (runs / "version_0" / "config.yaml").is_file()
    assert (runs / "version_0" / "checkpoints" / "last.ckpt").is_file()
