"""Exact resume: a killed or interrupted fit continues in its own run folder; one curve per tag, nothing lost.

Each run pauses itself at a known optimizer step (``tests.hooks.PauseAtStep``) so the test can kill or signal it
at that exact point, after the events logged so far have reached the disk.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import event_files, load_events, run_cli, start_cli, text_config, write_yaml
from tensorboard.plugins.hparams import plugin_data_pb2

MAX_STEPS = 12
PAUSE_STEP = 6


def fit_config(tmp_path: Path, model: Path, data: Path, pause: bool, pause_step: int = PAUSE_STEP) -> Path:
    config = text_config(model, str(data), tmp_path / "runs")
    config["trainer"].update(
        max_steps=MAX_STEPS, max_epochs=-1, log_every_n_steps=1, val_check_interval=2, limit_val_batches=1
    )
    config["trainer"]["logger"]["init_args"]["flush_secs"] = 1  # what was logged before the kill is on disk
    if pause:
        marker = str(tmp_path / "paused")
        config["trainer"]["callbacks"] = [
            {"class_path": "tests.hooks.PauseAtStep", "init_args": {"step": pause_step, "marker": marker}}
        ]
    return write_yaml(tmp_path / ("pause.yaml" if pause else "resume.yaml"), config)


def wait_for(condition, process, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended early (exit {process.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    events = load_events(run_dir)
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def steps_of(run_dir: Path) -> dict[str, list[int]]:
    events = load_events(run_dir)
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def assert_one_curve_per_tag(run_dir: Path, max_steps: int) -> None:
    for tag, steps in steps_of(run_dir).items():
        assert steps == sorted(set(steps)), f"{tag}: {steps}"  # strictly increasing: no duplicates after purge
    every_step = list(range(max_steps))
    assert steps_of(run_dir)["train/loss"] == every_step
    assert steps_of(run_dir)["lr-AdamW/decay"] == every_step


def test_fit_killed_mid_epoch_resumes_last_in_same_run(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    run_dir = tmp_path / "runs" / "test" / "version_0"
    log = tmp_path / "killed.log"
    every_4 = ("--last_checkpoint.every_n_train_steps", "4")
    process = start_cli("fit", "--config", str(fit_config(tmp_path, tiny_bert, sentiment_csv, True)), *every_4, log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    # the LR of the paused batch (step 5) is logged at its start: once it is readable, all earlier points are too
    wait_for(lambda: PAUSE_STEP - 1 in steps_of(run_dir).get("lr-AdamW/decay", []), process, log)
    process.kill()  # SIGKILL: no handler runs, no finalize
    process.wait()

    before = scalars(run_dir)
    restored = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < restored < PAUSE_STEP
    assert max(before["train/loss"]) >= restored  # points logged after the checkpoint, to be purged

    resume = fit_config(tmp_path, tiny_bert, sentiment_csv, False)
    result = run_cli("fit", "--config", str(resume), *every_4, "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-3000:]

    assert [p.name for p in (tmp_path / "runs" / "test").iterdir()] == ["version_0"]  # the same run folder
    # the killed session's files and the resumed one's (a new file after each checkpoint, which drains the events)
    assert len(event_files(run_dir)) >= 2
    assert_one_curve_per_tag(run_dir, MAX_STEPS)
    after = scalars(run_dir)
    for tag, points in before.items():  # nothing flushed before the kill (and before the checkpoint) is lost
        for step, value in points.items():
            if step < restored:
                assert after[tag][step] == pytest.approx(value), (tag, step)
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == MAX_STEPS


@pytest.mark.parametrize(
    ("signum", "pause_step"),
    [(signal.SIGINT, 6), (signal.SIGTERM, 5)],  # validation runs every 2 batches: after step 6's batch, not 5's
    ids=["ctrl-c-after-validation", "sigterm-mid-interval"],
)
def test_interrupt_finalizes_events_and_saves_resumable_last_ckpt(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, signum: signal.Signals, pause_step: int
) -> None:
    run_dir = tmp_path / "runs" / "test" / "version_0"
    log = tmp_path / "interrupted.log"
    config = fit_config(tmp_path, tiny_bert, sentiment_csv, True, pause_step)
    process = start_cli("fit", "--config", str(config), log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum, log.read_text()[-3000:]
    output = log.read_text()
    assert f"stopped by {signum.name} at step {pause_step}" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

    # the logger was finalized: the session end is recorded (as a failure) and every point is readable
    events = load_events(run_dir)
    content = events.PluginTagToContent("hparams")
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == 2  # STATUS_FAILURE
    assert steps_of(run_dir)["train/loss"] == list(range(pause_step))  # the batch in flight finished and logged
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_step(ckpt) == pause_step

    # resumable: continue from the explicit path, in the same folder, the next point at the next step
    resume = fit_config(tmp_path, tiny_bert, sentiment_csv, False)
    result = run_cli("fit", "--config", str(resume), "--ckpt_path", str(ckpt), "--trainer.max_steps", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs" / "test").iterdir()] == ["version_0"]
    assert_one_curve_per_tag(run_dir, 8)


def test_resume_refuses_changed_run_settings_and_allows_extending(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path
) -> None:
    """Batch size, learning rate, precision, workers, the training order, model or data may not change on resume;
    max_steps, the logging cadence and speed-only keys (eval order, fused AdamW, compile) may."""
    from conftest import run_main

    run_dir = tmp_path / "runs" / "test" / "version_0"
    config = str(fit_config(tmp_path, tiny_bert, sentiment_csv, False))
    short = ("--trainer.max_steps", "4", "--last_checkpoint.every_n_train_steps", "2")
    assert run_cli("fit", "--config", config, *short).returncode == 0
    files_before = event_files(run_dir)
    for change, shown in (
        (("--data.init_args.batch_size", "8"), "data.init_args.batch_size: 16 → 8"),
        (("--model.init_args.learning_rate", "0.01"), "model.init_args.learning_rate: 0.001 → 0.01"),
        (("--trainer.precision", "bf16-mixed"), "trainer.precision: None → bf16-mixed"),
        (("--data.init_args.num_workers", "1"), "data.init_args.num_workers: 0 → 1"),
        (("--data.init_args.group_by_length", "false"), "data.init_args.group_by_length: True → False"),
    ):
        code, _, err = run_main("fit", "--config", config, *short, *change, "--ckpt_path", "last")
        assert code == 2 and shown in err and "Traceback" not in err, err[-2000:]
        assert "--config " in err and str(run_dir / "config.yaml") in err  # the way back to the run's settings
    assert event_files(run_dir) == files_before  # nothing written by the refused resumes
    speed_only = ("--data.init_args.sort_eval_by_length", "true", "--model.init_args.fused_adamw", "false")
    result = run_cli("fit", "--config", config, "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "2",
                     *speed_only, "--ckpt_path", "last")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps_of(run_dir)["train/loss"] == [0, 1, 2, 3, 5]  # every step, then every 2nd (cadence changed)
