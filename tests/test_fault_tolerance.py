"""Kill a real run mid-epoch, resume it, and get the uninterrupted run's record and data order.

No flush tricks: the logger keeps its default flush interval; what makes the record whole is that every
checkpoint drains the events (``after_save_checkpoint``) and ``last.ckpt`` is written from step 1 on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import event_files, run_cli, start_cli, text_config, write_yaml
from test_resume import checkpoint_step, scalars, steps_of, wait_for

MAX_STEPS = 12  # 129 training rows / batch 16 → 9 steps per epoch: the run crosses into epoch 1
KILL_AT = 5  # paused after optimizer step 5; the last checkpoint is step 4 (every 2 steps)


def config(tmp_path: Path, model: Path, data: Path, name: str, pause: bool) -> Path:
    fit = text_config(model, str(data), tmp_path / name)
    fit["trainer"].update(max_steps=MAX_STEPS, max_epochs=-1, log_every_n_steps=1, val_check_interval=6)
    hooks = [{"class_path": "tests.hooks.RecordBatches", "init_args": {"path": str(tmp_path / f"{name}.batches")}}]
    if pause:
        marker = str(tmp_path / "paused")
        hooks.append({"class_path": "tests.hooks.PauseAtStep", "init_args": {"step": KILL_AT, "marker": marker}})
    fit["trainer"]["callbacks"] = hooks
    fit["last_checkpoint"] = {"every_n_train_steps": 2}
    return write_yaml(tmp_path / f"{name}{'-pause' if pause else ''}.yaml", fit)


def batches(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_sigkill_mid_epoch_before_any_validation_resumes_to_the_uninterrupted_run(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path
) -> None:
    whole = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "whole", False)))
    assert whole.returncode == 0, whole.stderr[-3000:]

    log = tmp_path / "killed.log"
    process = start_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", True)), log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.kill()  # SIGKILL at step 5 of epoch 0, before the first validation (step 6): nothing runs
    process.wait()
    run_dir = tmp_path / "cut" / "test" / "version_0"
    restored = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert restored == KILL_AT - 1  # a checkpoint exists although val/acc does not yet
    before = scalars(run_dir)
    assert set(range(restored)) <= set(before["train/loss"])  # the record reached the disk with the checkpoint

    resumed = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", False)),
                      "--ckpt_path", "last")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # the data: the interrupted epoch goes on in its own order, every example exactly once
    seen = batches(tmp_path / "cut.batches")
    cut_before, after = seen[:KILL_AT], seen[KILL_AT:]
    assert cut_before[:restored] + after == batches(tmp_path / "whole.batches")

    # the record: one folder, every step exactly once, every validation exactly once, as in the whole run
    assert [p.name for p in (tmp_path / "cut" / "test").iterdir()] == ["version_0"]
    whole_steps = steps_of(tmp_path / "whole" / "test" / "version_0")
    cut_steps = steps_of(run_dir)
    for tag in ("train/loss", "lr-AdamW/decay", "val/acc", "val/loss", "epoch"):
        assert cut_steps[tag] == whole_steps[tag], tag
    assert cut_steps["train/loss"] == list(range(MAX_STEPS))
    final = scalars(run_dir)
    for step in range(restored):  # kept from before the kill, identical
        assert final["train/loss"][step] == pytest.approx(before["train/loss"][step])
    whole_lr = scalars(tmp_path / "whole" / "test" / "version_0")["lr-AdamW/decay"]
    assert final["lr-AdamW/decay"] == pytest.approx(whole_lr)  # the schedule continues exactly
    assert len(event_files(run_dir)) >= 2
