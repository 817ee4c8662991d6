"""Bad input fails fast: non-zero exit, one clear message naming what to fix, and no training at all."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from conftest import event_files, load_events, run_cli, run_main, start_cli, text_config, write_yaml


def write_rows(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "sentiment")) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)
    return str(path)


def assert_fails_before_training(result, tmp_path: Path, *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, result.stderr[-3000:]
    assert event_files(tmp_path) == []  # nothing was trained or logged
    assert not list(tmp_path.rglob("*.ckpt"))


def fit(tmp_path: Path, model: Path, data_files, *extra: str, **data_overrides):
    config = write_yaml(tmp_path / "bad.yaml", text_config(model, data_files, tmp_path / "runs", **data_overrides))
    return run_cli("fit", "--config", str(config), *extra)


def test_missing_text_column(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    result = fit(tmp_path, tiny_bert, str(sentiment_csv), text_column="review")
    assert_fails_before_training(result, tmp_path, "['review'] not found", "data.text_column")


def test_missing_data_file(tmp_path: Path, tiny_bert: Path) -> None:
    result = fit(tmp_path, tiny_bert, str(tmp_path / "nope.csv"))
    assert_fails_before_training(result, tmp_path, "nope.csv", "does not exist")


def test_unknown_label_in_validation_split(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 10)
    val = write_rows(tmp_path / "val.csv", [("good film", "pos"), ("dull film", "meh")])
    result = fit(tmp_path, tiny_bert, {"train": train, "validation": val, "test": val})
    assert_fails_before_training(result, tmp_path, "['meh']", "do not occur in the training labels")


def test_empty_split(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 10)
    empty = write_rows(tmp_path / "test.csv", [])
    result = fit(tmp_path, tiny_bert, {"train": train, "validation": train, "test": empty})
    assert_fails_before_training(result, tmp_path, "data.data_files['test']", "test.csv", "the split is empty")


def test_unknown_model_path(tmp_path: Path, sentiment_csv: Path) -> None:
    result = fit(tmp_path, tmp_path / "no-such-model", str(sentiment_csv))
    assert_fails_before_training(result, tmp_path, "model_name_or_path=", "no-such-model", "could not be loaded")


def test_unknown_hub_model_name_offline(tmp_path: Path, sentiment_csv: Path) -> None:
    result = fit(tmp_path, Path("someone/not-a-real-model-xyz"), str(sentiment_csv))
    assert_fails_before_training(result, tmp_path, "not-a-real-model-xyz", "could not be loaded")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (("--trainer.max_epoch", "1"), "max_epoch"),  # misspelled key
        (("--data.init_args.batch_sise", "4"), "batch_sise"),
        (("--trainer.precision", "17-mixed"), "precision"),  # typo in a flag value
        (("--trainer.precision", "17"), "precision"),
    ],
)
def test_misspelled_config_key_or_value(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, override: tuple[str, str], expected: str
) -> None:
    result = fit(tmp_path, tiny_bert, str(sentiment_csv), *override)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-3000:]
    assert event_files(tmp_path) == []


def test_misspelled_key_in_yaml(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["model"]["init_args"]["learnin_rate"] = 0.1
    result = run_cli("fit", "--config", str(write_yaml(tmp_path / "typo.yaml", config)))
    assert result.returncode != 0
    assert "learnin_rate" in result.stderr, result.stderr[-3000:]
    assert event_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------------
# In-process (``app.cli.main``): the same code path without a new interpreter, for checks that stop early.


def fit_here(tmp_path: Path, model: Path, data_files, *extra: str, **data_overrides) -> tuple[int, str, str]:
    config = write_yaml(tmp_path / "bad.yaml", text_config(model, data_files, tmp_path / "runs", **data_overrides))
    return run_main("fit", "--config", str(config), *extra)


def assert_one_error_line(outcome: tuple[int, str, str], tmp_path: Path, *expected: str, trained: bool = False) -> str:
    code, _, err = outcome
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tbx-finetune: error: ")]
    assert len(lines) == 1, err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    if not trained:
        assert event_files(tmp_path) == [] and not list((tmp_path / "runs").rglob("*.ckpt"))
    return lines[0]


def test_non_utf8_text_file(tmp_path: Path, tiny_bert: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"sentence,sentiment\n" + "caf\xe9 cr\xe8me tr\xe8s bon,pos\n".encode("latin-1") * 20)
    outcome = fit_here(tmp_path, tiny_bert, str(path))
    assert_one_error_line(outcome, tmp_path, "latin1.csv", "UTF-8")


def test_wrong_label_column(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    outcome = fit_here(tmp_path, tiny_bert, str(sentiment_csv), label_column="stars")
    assert_one_error_line(outcome, tmp_path, "['stars'] not found", "data.label_column")


def test_unknown_label_in_test_split(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 10)
    test = write_rows(tmp_path / "test.csv", [("good film", "pos"), ("odd film", "weird")])
    outcome = fit_here(tmp_path, tiny_bert, {"train": train, "validation": train, "test": test})
    assert_one_error_line(outcome, tmp_path, "test split", "['weird']", "data.labels")


def test_checkpoint_of_a_different_model(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    from modules import TextClassifier

    other = TextClassifier(str(tiny_bert), num_labels=3)  # a 3-class head: the config's data has 2 classes
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "global_step": 5, "pytorch-lightning_version": "2.6.6"}, ckpt)
    outcome = fit_here(tmp_path, tiny_bert, str(sentiment_csv), "--ckpt_path", str(ckpt))
    assert_one_error_line(outcome, tmp_path, "other.ckpt", "different model", "model.classifier.weight", "(3, 32)")


def test_missing_or_corrupt_checkpoint(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    outcome = fit_here(tmp_path, tiny_bert, str(sentiment_csv), "--ckpt_path", str(tmp_path / "gone.ckpt"))
    assert_one_error_line(outcome, tmp_path, "ckpt_path=", "gone.ckpt", "no such checkpoint")
    (tmp_path / "torn.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    outcome = fit_here(tmp_path, tiny_bert, str(sentiment_csv), "--ckpt_path", str(tmp_path / "torn.ckpt"))
    assert_one_error_line(outcome, tmp_path, "torn.ckpt", "not a checkpoint that loads safely")


def test_runs_dir_under_a_regular_file(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Works as root too (chmod does not stop root): nothing can be created below a regular file."""
    (tmp_path / "a_file").write_text("not a folder")
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "a_file" / "runs")
    outcome = run_main("fit", "--config", str(write_yaml(tmp_path / "c.yaml", config)))
    assert_one_error_line(outcome, tmp_path, "cannot create the run directory", "a_file", "save_dir")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_runs_dir(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "test").mkdir(parents=True)
    (runs / "test").chmod(0o555)
    try:
        outcome = run_main(
            "fit", "--config", str(write_yaml(tmp_path / "c.yaml", text_config(tiny_bert, str(sentiment_csv), runs)))
        )
        assert_one_error_line(outcome, tmp_path, "cannot create the run directory", "Permission denied", "save_dir")
    finally:
        (runs / "test").chmod(0o755)


def test_nan_loss_stops_the_run_with_a_message(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["model"]["init_args"].update(learning_rate=1e30, warmup_ratio=0.0)  # weights overflow after one step
    config["trainer"].update(max_steps=8, log_every_n_steps=1, num_sanity_val_steps=0)
    outcome = run_main("fit", "--config", str(write_yaml(tmp_path / "nan.yaml", config)))
    line = assert_one_error_line(outcome, tmp_path, "train/loss became nan", "learning_rate", trained=True)
    run_dir = tmp_path / "runs" / "test" / "version_0"
    events = load_events(run_dir)  # the logger was finalized: what was logged before the NaN is readable
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps and f"at step {steps[-1] + 1}" in line  # stopped at the first bad step, not max_steps
    assert "_hparams_/session_end_info" in events.PluginTagToContent("hparams")


def test_disk_full_mid_run_stops_cleanly_and_keeps_what_was_written(
    tmp_path: Path, tiny_bert: Path, sentiment_csv: Path
) -> None:
    """Checkpoint writes fail with ENOSPC from step 4 on (tests.hooks.DiskFullFrom), as when a disk fills up."""
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["trainer"].update(max_steps=8, log_every_n_steps=1, val_check_interval=2, limit_val_batches=1)
    config["trainer"]["callbacks"] = [{"class_path": "tests.hooks.DiskFullFrom", "init_args": {"step": 4}}]
    log = tmp_path / "full.log"
    config_path = str(write_yaml(tmp_path / "full.yaml", config))
    process = start_cli("fit", "--config", config_path, "--checkpoint.every_n_train_steps", "2", log=log)
    assert process.wait(timeout=300) == 2, log.read_text()[-3000:]
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("tbx-finetune: error: ")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and ".ckpt" in lines[0], output[-3000:]
    run_dir = tmp_path / "runs" / "test" / "version_0"
    saved = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch0-step2.ckpt", "last.ckpt"]
    assert all(torch.load(p, map_location="cpu", weights_only=True)["global_step"] == 2 for p in saved)
    events = load_events(run_dir)
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2]  # the batch whose save failed is not logged
    end = events.PluginTagToContent("hparams")["_hparams_/session_end_info"]
    assert end  # finalized: the session end is recorded and the file closed
