"""Kill a real run, resume it, and get the uninterrupted run's record and data order.

No flush tricks: the logger keeps its default flush interval; what makes the record whole is that every
checkpoint drains the events (``after_save_checkpoint``) and ``last.ckpt`` is written from step 1 on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, start_cli, text_config, write_yaml
from test_resume import checkpoint_step, scalars, steps_of, wait_for

MAX_STEPS = 12  # 129 training rows / batch 16 → 9 steps per epoch: the run crosses into epoch 1
KILL_AT = 5  # paused after optimizer step 5; the last checkpoint is step 4 (every 2 steps)


def config(tmp_path: Path, model: Path, data: Path, name: str, pause: str | None, step: int = KILL_AT) -> Path:
    fit = text_config(model, str(data), tmp_path / name)
    fit["trainer"].update(
        max_steps=MAX_STEPS, max_epochs=-1, log_every_n_steps=1, val_check_interval=6, limit_val_batches=2
    )
    hooks = [{"class_path": "tests.hooks.RecordBatches", "init_args": {"path": str(tmp_path / f"{name}.batches")}}]
    if pause:
        marker = str(tmp_path / "paused")
        hooks.append({"class_path": f"tests.hooks.{pause}", "init_args": {"step": step, "marker": marker}})
    fit["trainer"]["callbacks"] = hooks
    fit["last_checkpoint"] = {"every_n_train_steps": 2}
    return write_yaml(tmp_path / f"{name}{'-pause' if pause else ''}.yaml", fit)


def batches(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("pause", "step", "restored"),
    [
        ("PauseAtStep", KILL_AT, KILL_AT - 1),  # mid-epoch, before the first validation (after step 6)
    ],
    ids=["mid-epoch-before-any-validation"],
)
def test_sigkill_then_resume_gives_the_uninterrupted_record(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, pause: str, step: int, restored: int
) -> None:
    whole = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "whole", None)))
    assert whole.returncode == 0, whole.stderr[-3000:]

    log = tmp_path / "killed.log"
    process = start_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", pause, step)), log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.kill()  # SIGKILL: no handler runs, nothing is finalized
    process.wait()
    run_dir = tmp_path / "cut" / "test" / "version_0"
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == restored  # no val/acc needed for it
    before = scalars(run_dir)
    assert set(range(restored)) <= set(before["train/loss"])  # the record reached the disk with the checkpoint

    resumed = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", None)),
                      "--ckpt_path", "last")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # the data: the interrupted epoch goes on in its own order, every example exactly once
    seen = batches(tmp_path / "cut.batches")
    assert seen[:restored] + seen[step:] == batches(tmp_path / "whole.batches")

    # the record: one folder, every step and every validation exactly once, as in the whole run
    assert [p.name for p in (tmp_path / "cut" / "test").iterdir()] == ["version_0"]
    whole_steps = steps_of(tmp_path / "whole" / "test" / "version_0")
    cut_steps = steps_of(run_dir)
    for tag in ("train/loss", "lr-AdamW/decay", "val/acc", "val/loss", "epoch", "train/acc"):
        assert cut_steps[tag] == whole_steps[tag], tag
    assert cut_steps["train/loss"] == list(range(MAX_STEPS))
    final = scalars(run_dir)
    for kept in range(restored):  # kept from before the kill, identical
        assert final["train/loss"][kept] == pytest.approx(before["train/loss"][kept])
    whole_lr = scalars(tmp_path / "whole" / "test" / "version_0")["lr-AdamW/decay"]
    assert final["lr-AdamW/decay"] == pytest.approx(whole_lr)  # the schedule continues exactly
