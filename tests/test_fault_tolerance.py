"""Kill or stop a real run in each phase, resume it, and get the uninterrupted run's record and data order.

No flush tricks: the logger keeps its default flush interval; what makes the record whole is that every
checkpoint drains the events (``after_save_checkpoint``), ``last.ckpt`` is written from step 1 on (after the
validation when one follows the step), and a checkpoint carries the random streams and the epoch's metric state.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import run_cli, start_cli, text_config, write_yaml
from test_resume import checkpoint_step, scalars, steps_of, wait_for

EPOCHS, STEPS_PER_EPOCH = 2, 6  # epochs, not max_steps: Lightning then builds the loader before its restore
MAX_STEPS = EPOCHS * STEPS_PER_EPOCH
VALIDATE_EVERY = 3  # validation after steps 3, 6 (the end of epoch 0), 9 and 12
SAVE_EVERY = 2  # last.ckpt every 2 optimizer steps


def config(tmp_path: Path, model: Path, data: Path, name: str, pause: tuple[str, int] | None = None) -> Path:
    fit = text_config(model, str(data), tmp_path / name)
    fit["trainer"].update(
        max_epochs=EPOCHS,
        limit_train_batches=STEPS_PER_EPOCH,
        log_every_n_steps=1,
        val_check_interval=VALIDATE_EVERY,
        limit_val_batches=2,
        limit_test_batches=2,
    )
    hooks = [{"class_path": "tests.hooks.RecordBatches", "init_args": {"path": str(tmp_path / f"{name}.batches")}}]
    if pause:
        phase, step = pause
        marker = str(tmp_path / "paused")
        hooks.append(
            {"class_path": "tests.hooks.PauseAtStep", "init_args": {"step": step, "marker": marker, "phase": phase}}
        )
    fit["trainer"]["callbacks"] = hooks
    fit["last_checkpoint"] = {"every_n_train_steps": SAVE_EVERY}
    fit["test_after_fit"] = True
    return write_yaml(tmp_path / f"{name}{'-pause' if pause else ''}.yaml", fit)


def batches(path: Path) -> list[str]:
    return path.read_text().splitlines()


def uninterrupted(tmp_path: Path, model: Path, data: Path, *options: str) -> Path:
    """Run the uninterrupted fit a case compares with (``whole/`` and ``whole.batches`` under ``tmp_path``)."""
    tmp_path.mkdir(exist_ok=True)
    result = run_cli("fit", "--config", str(config(tmp_path, model, data, "whole")), *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path


def assert_same_values(run_dir: Path, whole: Path) -> None:
    """Every scalar of the uninterrupted run, value for value (same seed, same data order, random streams restored);
    ``perf/*`` is a measured time: its steps match, not its values."""
    final, expected = scalars(run_dir), scalars(whole / "whole" / "test" / "version_0")
    for tag, points in expected.items():
        if not tag.startswith("perf/"):
            assert final[tag] == pytest.approx(points, rel=1e-4, abs=1e-6), tag


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> Path:
    """The uninterrupted run every case compares with."""
    return uninterrupted(tmp_path_factory.mktemp("whole"), tiny_bert, sentiment_csv)


@pytest.mark.parametrize(
    ("signum", "phase", "step", "restored", "code"),
    [
        (signal.SIGKILL, "train", 3, 2, -signal.SIGKILL),  # epoch 0, before any validation
        (signal.SIGKILL, "validation", 6, 4, -signal.SIGKILL),  # in the epoch-end validation; step 6's save waits
        (signal.SIGKILL, "train", 7, 6, -signal.SIGKILL),  # in epoch 1, restored from the save before epoch 0's end
        (signal.SIGTERM, "train", 5, 5, 128 + signal.SIGTERM),  # a scheduler's stop, mid-epoch
        (signal.SIGINT, "validation", 6, 6, 128 + signal.SIGINT),  # Ctrl-C in the epoch-end validation
        (signal.SIGINT, "validation", 9, 9, 128 + signal.SIGINT),  # Ctrl-C in a mid-epoch validation
        (signal.SIGKILL, "test", MAX_STEPS, MAX_STEPS, -signal.SIGKILL),  # in test_after_fit: no step redone
    ],
    ids=[
        "sigkill-before-any-validation",
        "sigkill-in-epoch-end-validation",
        "sigkill-after-the-epoch-end",
        "sigterm-mid-epoch",
        "ctrl-c-in-epoch-end-validation",
        "ctrl-c-in-mid-epoch-validation",
        "sigkill-in-test-after-fit",
    ],  # fmt: skip
)
def test_stopped_then_resumed_run_gives_the_uninterrupted_record(
    tmp_path: Path,
    tiny_bert: Path,
    sentiment_csv: Path,
    whole: Path,
    signum: signal.Signals,
    phase: str,
    step: int,
    restored: int,
    code: int,
) -> None:
    log = tmp_path / "stopped.log"
    process = start_cli(
        "fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", (phase, step))), log=log
    )
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.send_signal(signum)
    assert process.wait(timeout=120) == code, log.read_text()[-3000:]
    run_dir = tmp_path / "cut" / "test" / "version_0"
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == restored
    before = scalars(run_dir)
    assert set(range(restored)) <= set(before["train/loss"])  # the record reached the disk with the checkpoint

    resumed = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # the data: the interrupted epoch goes on in its own order, every example exactly once
    seen = batches(tmp_path / "cut.batches")
    assert seen[:restored] + seen[step:] == batches(whole / "whole.batches")

    # the record: one folder; every step, validation and test exactly once, with the uninterrupted run's values
    assert [p.name for p in (tmp_path / "cut" / "test").iterdir()] == ["version_0"]
    whole_dir = whole / "whole" / "test" / "version_0"
    assert steps_of(run_dir) == steps_of(whole_dir)
    assert steps_of(run_dir)["train/loss"] == list(range(MAX_STEPS))
    assert_same_values(run_dir, whole)
    final = scalars(run_dir)
    for kept in range(restored):  # kept from before the stop, identical
        assert final["train/loss"][kept] == pytest.approx(before["train/loss"][kept])


MID_EPOCH_VALIDATION = ("--trainer.val_check_interval", "4", "--trainer.check_val_every_n_epoch", "null")


@pytest.mark.parametrize("validation", [(), MID_EPOCH_VALIDATION], ids=["validated-epoch-end", "unvalidated-epoch-end"])
@pytest.mark.parametrize("budget", [(), ("--trainer.max_steps", str(MAX_STEPS))], ids=["max_epochs", "max_steps"])
def test_the_default_cadence_saves_each_epoch_and_a_kill_resumes_from_it(
    tmp_path: Path,
    tiny_bert: Path,
    sentiment_csv: Path,
    whole: Path,
    budget: tuple[str, ...],
    validation: tuple[str, ...],
) -> None:
    """Without a cadence, ``last.ckpt`` is written at each epoch's last step, after its validation; with no validation
    there, at the next step (Lightning restores a save at an unvalidated last batch as the next epoch begun without
    its start). A SIGKILL in the next epoch loses only its steps since, and the resumed record is the uninterrupted
    one."""
    default = ("--last_checkpoint.every_n_train_steps", "null", *budget, *validation)
    if validation:  # the uninterrupted run with the same validation points
        whole = uninterrupted(tmp_path / "own", tiny_bert, sentiment_csv, *validation)
    log = tmp_path / "stopped.log"
    paused = config(tmp_path, tiny_bert, sentiment_csv, "cut", ("train", STEPS_PER_EPOCH + 2))
    process = start_cli("fit", "--config", str(paused), *default, log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=120) == -signal.SIGKILL
    run_dir = tmp_path / "cut" / "test" / "version_0"
    restored = STEPS_PER_EPOCH + (1 if validation else 0)
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == restored

    resumed = run_cli(
        "fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")), *default, "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    seen = batches(tmp_path / "cut.batches")
    assert seen[:restored] + seen[STEPS_PER_EPOCH + 2 :] == batches(whole / "whole.batches")
    assert steps_of(run_dir) == steps_of(whole / "whole" / "test" / "version_0")
    assert not list((run_dir / "checkpoints").glob("last-v*"))  # the resumed fit overwrote its own last.ckpt
    assert_same_values(run_dir, whole)


@pytest.mark.parametrize(
    ("short", "longer", "options"),
    [
        (("--trainer.max_epochs", str(EPOCHS - 1)), (), ()),
        (("--trainer.max_steps", str(STEPS_PER_EPOCH)), ("--trainer.max_steps", str(MAX_STEPS)), ()),
        # no validation at the end: the save is fit's end, restored as a new epoch; the plain shuffle draws its
        # order from the random streams
        (
            ("--trainer.max_epochs", str(EPOCHS - 1)),
            (),
            (*MID_EPOCH_VALIDATION, "--data.init_args.group_by_length", "false"),
        ),
        (
            ("--trainer.max_steps", str(STEPS_PER_EPOCH)),
            ("--trainer.max_steps", str(MAX_STEPS)),
            (*MID_EPOCH_VALIDATION, "--data.init_args.group_by_length", "false"),
        ),
    ],
    ids=[
        "max_epochs",
        "max_steps",
        "max_epochs-unvalidated-end-plain-shuffle",
        "max_steps-unvalidated-end-plain-shuffle",
    ],
)
def test_a_finished_run_extended_gives_the_longer_runs_steps_and_data_order(
    tmp_path: Path,
    tiny_bert: Path,
    sentiment_csv: Path,
    whole: Path,
    short: tuple[str, ...],
    longer: tuple[str, ...],
    options: tuple[str, ...],
) -> None:
    """A run that ended, extended with a larger ``max_epochs`` or ``max_steps`` and ``--ckpt_path last``: the new steps
    follow on at the next step, in the order the longer run would have trained."""
    if options:  # the uninterrupted run with the same options
        whole = uninterrupted(tmp_path / "own", tiny_bert, sentiment_csv, *options)
    first = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")), *short, *options)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "cut" / "test" / "version_0"
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH

    extended = run_cli(
        "fit",
        "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")),
        *longer, *options,
        "--ckpt_path", "last",
    )  # fmt: skip
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert batches(tmp_path / "cut.batches") == batches(whole / "whole.batches")
    # the longer run's record: each step, validation and epoch end once (the short run's test, at the step the
    # extension resumed from, is hidden with what followed the checkpoint)
    assert steps_of(run_dir) == steps_of(whole / "whole" / "test" / "version_0")


def test_ctrl_c_under_two_process_ddp_stops_every_rank_at_one_step_and_resumes(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path
) -> None:
    """Ctrl-C in a terminal reaches every process of the job (the launcher's rank 0 and the rank it started): both
    ranks stop after the same batch, one checkpoint is saved, nobody hangs, and the resume completes the record."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    ddp = str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")
    paused = config(tmp_path, tiny_bert, sentiment_csv, "ddp", ("train", 7))  # in epoch 1 (5 steps an epoch)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "ddp.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "fit", "--config", str(paused), "--config", ddp],
            cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group gets it
    assert process.wait(timeout=120) == 128 + signal.SIGINT, log.read_text()[-3000:]
    with pytest.raises(ProcessLookupError):  # no rank left behind
        for _ in range(50):
            os.killpg(process.pid, 0)
            time.sleep(0.1)
    run_dir = tmp_path / "ddp" / "test" / "version_0"
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 7

    resumed = run_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "ddp")), "--config", ddp,
                      "--ckpt_path", "last")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp" / "test").iterdir()] == ["version_0"]
    # 5 global steps per epoch over 2 ranks, validation after every 3rd batch: every step and validation once
    steps = steps_of(run_dir)
    assert steps["train/loss"] == list(range(10))
    assert steps["val/acc"] == [2, 7] and steps["train/acc"] == [4, 9] and steps["test/acc"] == [10]
    # the interrupted epoch, both ranks, before and after the stop: every example once, as in the epoch before it
    seen = [line.split() for line in batches(tmp_path / "ddp.batches")]
    epochs = [[example for epoch_, *examples in seen if epoch_ == e for example in examples] for e in ("0", "1")]
    assert sorted(set(epochs[1])) == sorted(set(epochs[0])) and len(epochs[1]) == len(epochs[0])


def test_slurm_requeue_signal_saves_requeues_and_the_restart_continues_the_run(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, whole: Path
) -> None:
    """Under SLURM with Lightning's auto-requeue (its default), SLURM's SIGUSR1 stops the run at a batch boundary,
    saves last.ckpt and calls ``scontrol requeue <job>``; the restarted job (same command, ``--ckpt_path last``,
    the run named after the job) continues the run in its folder. SLURM is simulated: its variables, and an
    ``scontrol`` on PATH that records its arguments."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    (fake / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}  # fmt: skip
    env = {**os.environ, **slurm, "PATH": f"{fake}:{os.environ['PATH']}", "SCONTROL_LOG": str(tmp_path / "scontrol"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    job = ("--trainer.logger.init_args.version", "slurm-4242", "--ckpt_path", "last")

    def fit(*extra: str, log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen([sys.executable, "-m", "app.cli", "fit", *extra, *job], cwd=REPO, env=env,
                                    stdout=out, stderr=out)  # fmt: skip

    log = tmp_path / "first.log"
    first = fit("--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", ("train", 5))), log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), first, log)
    first.send_signal(signal.SIGUSR1)
    assert first.wait(timeout=120) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "4242"]
    run_dir = tmp_path / "cut" / "test" / "slurm-4242"
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 5
    assert not list(tmp_path.rglob("hpc_ckpt_*.ckpt")) and not list(REPO.glob("hpc_ckpt_*.ckpt"))

    log = tmp_path / "restart.log"
    restart = fit("--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")), log=log)
    assert restart.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert [p.name for p in (tmp_path / "cut" / "test").iterdir()] == ["slurm-4242"]
    assert steps_of(run_dir) == steps_of(whole / "whole" / "test" / "version_0")


def test_a_run_still_training_is_not_resumed_by_a_second_process(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path
) -> None:
    """``--ckpt_path last`` while the run's own fit still writes it would interleave two writers in one record: it is
    refused (exit 2, the holder named) until that fit has stopped; a SIGKILLed holder frees the folder too."""
    from conftest import run_main

    log = tmp_path / "first.log"
    first = start_cli("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut", ("train", 3))), log=log)
    wait_for(lambda: (tmp_path / "paused").exists(), first, log)
    resume = ("fit", "--config", str(config(tmp_path, tiny_bert, sentiment_csv, "cut")), "--ckpt_path", "last")
    code, _, err = run_main(*resume)
    assert code == 2 and "is still being trained (pid" in err and "Traceback" not in err, err[-2000:]
    first.kill()
    first.wait(timeout=60)
    result = run_cli(*resume)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "cut" / "test" / "version_0" / ".fit.lock").exists()  # removed at the fit's end
