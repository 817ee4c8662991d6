"""Two fits started at the same instant into the same ``runs/``: two run folders, two intact events files."""

from __future__ import annotations

from pathlib import Path

from conftest import load_events, start_cli, text_config, write_yaml, writers


def test_simultaneous_fits_get_their_own_run_dirs(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["trainer"].update(
        max_steps=2, log_every_n_steps=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0
    )
    path = write_yaml(tmp_path / "race.yaml", config)
    rounds, per_round = 2, 2
    for round_ in range(rounds):
        logs = [tmp_path / f"round{round_}-{i}.log" for i in range(per_round)]
        processes = [start_cli("fit", "--config", str(path), log=log) for log in logs]
        for process, log in zip(processes, logs, strict=True):
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]

    runs = tmp_path / "runs" / "test"
    assert sorted(p.name for p in runs.iterdir()) == [f"version_{i}" for i in range(rounds * per_round)]
    for run_dir in runs.iterdir():
        assert len(writers(run_dir)) == 1, run_dir
        events = load_events(run_dir)  # intact: every record parses, each run has its own complete curve
        assert [e.step for e in events.Scalars("train/loss")] == [0, 1], run_dir
        assert "_hparams_/session_end_info" in events.PluginTagToContent("hparams")
        assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
