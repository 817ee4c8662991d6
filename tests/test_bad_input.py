"""Bad input fails fast: exit code 2, one clear message naming what to fix, no traceback, nothing written.

``test_bad_input`` is the battery: one table of cases, each run in-process through ``app.cli.main`` (the real CLI
without a new interpreter), each ending before anything is trained or a run folder exists. Our own checks print one
``tbx-finetune: error: ...`` line; values a type rejects (``PositiveInt`` batch sizes, a misspelled key) end in
jsonargparse's usage and ``error:`` message, also with exit code 2.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import event_files, load_events, run_cli, run_main, start_cli, text_config, write_yaml

NOT_ROOT = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")


def write_rows(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "sentiment")) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


GOOD = [("good film", "pos"), ("bad film", "neg")] * 10
GOOD_JSON = [{"sentence": text, "sentiment": label} for text, label in GOOD]


def train_val_test(tmp: Path, val: list[tuple[str, str]] | None = None, test: list[tuple[str, str]] | None = None):
    train = write_rows(tmp / "train.csv", GOOD)
    return {
        "train": train,
        "validation": write_rows(tmp / "val.csv", val) if val is not None else train,
        "test": write_rows(tmp / "test.csv", test) if test is not None else train,
    }


def non_utf8(tmp: Path) -> str:
    path = tmp / "latin1.csv"
    path.write_bytes(b"sentence,sentiment\n" + "caf\xe9 cr\xe8me tr\xe8s bon,pos\n".encode("latin-1") * 20)
    return str(path)


def jsonl_key_in_a_later_chunk(tmp: Path) -> str:
    """One JSONL file over ``datasets``' 10 MB read chunk whose last row has a new key: a cast error there."""
    rows = [{"sentence": "a film " * 15_000, "sentiment": ("pos", "neg")[i % 2]} for i in range(110)]  # 11.5 MB
    return write_jsonl(tmp / "big.jsonl", [*rows, {"sentence": "dull film", "sentiment": "neg", "source": "web"}])


def jsonl_parts_with_other_keys(tmp: Path) -> list[str]:
    renamed = [*GOOD_JSON[:3], {"text": "dull film", "sentiment": "neg"}]
    return [write_jsonl(tmp / "part1.jsonl", GOOD_JSON), write_jsonl(tmp / "part2.jsonl", renamed)]


def jsonl_broken_row(tmp: Path) -> str:
    path = write_jsonl(tmp / "broken.jsonl", GOOD_JSON)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"sentence": "x"\n')  # line 21: no closing brace
    return path


def checkpoint_of_a_three_class_model(config: dict, tmp: Path) -> None:
    from modules import TextClassifier

    other = TextClassifier(config["model"]["init_args"]["model_name_or_path"], num_labels=3)  # the data has 2
    torch.save(
        {"state_dict": other.state_dict(), "global_step": 5, "pytorch-lightning_version": "2.6.6"}, tmp / "o.ckpt"
    )
    config["ckpt_path"] = str(tmp / "o.ckpt")


def runs_under_a_regular_file(config: dict, tmp: Path) -> None:
    """Works as root too (chmod does not stop root): nothing can be created below a regular file."""
    (tmp / "a_file").write_text("not a folder")
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp / "a_file" / "runs")


def read_only_runs(config: dict, tmp: Path) -> None:
    (tmp / "runs" / "test").mkdir(parents=True)
    (tmp / "runs" / "test").chmod(0o555)  # pytest's tmp_path cleanup makes it writable again to remove it


def images(config: dict, tmp: Path, **init_args: Any) -> None:
    config["data"] = {"class_path": "datamodules.ImageDataModule", "init_args": {"data_dir": str(tmp), **init_args}}


@dataclass(frozen=True)
class Bad:
    """One bad input: how to make it and what the error must say."""

    expected: tuple[str, ...]  # fragments of the one error line (of jsonargparse's message when ``parser``)
    args: tuple[str, ...] = ()  # command-line overrides
    data: dict[str, Any] | None = None  # data.init_args overrides in the YAML config
    files: Callable[[Path], Any] | None = None  # writes data files under tmp_path, returns data.data_files
    edit: Callable[[dict, Path], None] | None = None  # edits the config (and may write files under tmp_path)
    parser: bool = False  # rejected by jsonargparse while parsing, with its usage message


def case(case_id: str, *expected: str, marks=(), **how: Any):
    return pytest.param(Bad(expected, **how), id=case_id, marks=marks)


BATTERY = [
    # ---- data files and columns
    case("missing_data_file", "nope.csv", "does not exist", files=lambda tmp: str(tmp / "nope.csv")),
    case("missing_text_column", "['review'] not found", "data.text_column", data={"text_column": "review"}),
    case("missing_label_column", "['stars'] not found", "data.label_column", data={"label_column": "stars"}),
    case("non_utf8_file", "latin1.csv", "UTF-8", files=non_utf8),
    case(
        "empty_split",
        "data.data_files['test']",
        "test.csv",
        "the split is empty",
        files=lambda tmp: train_val_test(tmp, test=[]),
    ),
    case(
        "blank_label",
        "train split",
        "no label in column 'sentiment'",
        "rows [3]",
        files=lambda tmp: write_rows(tmp / "blank.csv", [*GOOD[:3], ("odd film", ""), *GOOD[3:]]),
    ),
    case(
        "nan_label",
        "train split",
        "no label in column 'sentiment'",
        "rows [0]",
        files=lambda tmp: write_rows(tmp / "nan.csv", [("odd film", "NaN"), *GOOD]),
    ),
    case(
        "unknown_label_in_validation",
        "['meh']",
        "do not occur in the training labels",
        files=lambda tmp: train_val_test(tmp, val=[("good film", "pos"), ("dull film", "meh")]),
    ),
    case(
        "unknown_label_in_test",
        "test split",
        "['weird']",
        "data.labels",
        files=lambda tmp: train_val_test(tmp, test=[("good film", "pos"), ("odd film", "weird")]),
    ),
    case(
        "jsonl_new_key_in_a_later_chunk",
        "big.jsonl",
        "line 111",
        "extra key(s) ['source']",
        "give every row the same keys",
        files=jsonl_key_in_a_later_chunk,
    ),
    case(
        "jsonl_parts_with_other_keys",
        "part2.jsonl",
        "line 4",
        "extra key(s) ['text'] and lacks ['sentence']",
        "give every row the same keys",
        files=jsonl_parts_with_other_keys,
    ),
    case(
        "jsonl_row_without_the_label_key",
        "no label in column 'sentiment'",
        "rows [2]",
        files=lambda tmp: write_jsonl(tmp / "r.jsonl", [*GOOD_JSON[:2], {"sentence": "x"}, *GOOD_JSON[2:]]),
    ),
    case("jsonl_broken_row", "broken.jsonl", "line 21", "not valid JSON", files=jsonl_broken_row),
    # ---- data numbers: rejected by their types (jsonargparse.typing) while parsing
    case("batch_size_0", "batch_size", "v>0", args=("--data.init_args.batch_size", "0"), parser=True),
    case("batch_size_negative", "batch_size", "v>0", args=("--data.init_args.batch_size", "-2"), parser=True),
    case("batch_size_0_in_yaml", "batch_size", "v>0", data={"batch_size": 0}, parser=True),
    case("eval_batch_size_0", "eval_batch_size", "v>0", args=("--data.init_args.eval_batch_size", "0"), parser=True),
    case("num_workers_negative", "num_workers", "v>=0", args=("--data.init_args.num_workers", "-1"), parser=True),
    case("max_length_0", "max_length", "v>0", args=("--data.init_args.max_length", "0"), parser=True),
    case("max_samples_0", "max_samples", "v>0", args=("--data.init_args.max_samples", "0"), parser=True),
    case("val_fraction_above_1", "val_fraction", "v<=1", args=("--data.init_args.val_fraction", "1.5"), parser=True),
    case("image_batch_size_0", "batch_size", "v>0", edit=lambda c, tmp: images(c, tmp, batch_size=0), parser=True),
    case("image_size_0", "image_size", "v>0", edit=lambda c, tmp: images(c, tmp, image_size=0), parser=True),
    # ---- trainer numbers (app/config_checks.py) and the model's
    case(
        "max_epochs_negative",
        "trainer.max_epochs=-5",
        "-1 for no limit",
        args=("--trainer.max_epochs", "-5"),
    ),
    case("max_epochs_0", "trainer.max_epochs=0", "positive number of epochs", args=("--trainer.max_epochs", "0")),
    case("max_steps_negative", "trainer.max_steps=-3", "-1 for no limit", args=("--trainer.max_steps", "-3")),
    case(
        "accumulate_grad_batches_0",
        "trainer.accumulate_grad_batches=0",
        "1 (no accumulation)",
        args=("--trainer.accumulate_grad_batches", "0"),
    ),
    case(
        "val_check_interval_0",
        "trainer.val_check_interval=0",
        "fraction of the training epoch",
        args=("--trainer.val_check_interval", "0"),
    ),
    case(
        "check_val_every_n_epoch_0",
        "trainer.check_val_every_n_epoch=0",
        "positive number of epochs",
        args=("--trainer.check_val_every_n_epoch", "0"),
    ),
    case(
        "gradient_clip_val_negative",
        "trainer.gradient_clip_val=-1",
        "null for no clipping",
        args=("--trainer.gradient_clip_val", "-1"),
    ),
    case(
        "learning_rate_negative",
        "model.init_args.learning_rate=-1",
        "> 0",
        args=("--model.init_args.learning_rate", "-1"),
    ),
    # ---- misspelled keys and values
    case("misspelled_trainer_key", "max_epoch", args=("--trainer.max_epoch", "1"), parser=True),
    case("misspelled_data_key", "batch_sise", args=("--data.init_args.batch_sise", "4"), parser=True),
    case("misspelled_precision", "precision", args=("--trainer.precision", "17-mixed"), parser=True),
    case("unknown_precision", "precision", args=("--trainer.precision", "17"), parser=True),
    case(
        "misspelled_key_in_yaml",
        "learnin_rate",
        edit=lambda config, tmp: config["model"]["init_args"].update(learnin_rate=0.1),
        parser=True,
    ),
    # ---- model and checkpoint
    case(
        "unknown_model_path",
        "model_name_or_path=",
        "no-such-model",
        "could not be loaded",
        edit=lambda config, tmp: config["model"]["init_args"].update(model_name_or_path=str(tmp / "no-such-model")),
    ),
    case(
        "unknown_hub_model_offline",
        "not-a-real-model-xyz",
        "could not be loaded",
        edit=lambda config, tmp: config["model"]["init_args"].update(model_name_or_path="someone/not-a-real-model-xyz"),
    ),
    case(
        "checkpoint_of_a_different_model",
        "o.ckpt",
        "different model",
        "model.classifier.weight",
        "(3, 32)",
        edit=checkpoint_of_a_three_class_model,
    ),
    case(
        "missing_checkpoint", "ckpt_path=", "gone.ckpt", "no such checkpoint", args=("--ckpt_path", "{tmp}/gone.ckpt")
    ),
    case(
        "corrupt_checkpoint",
        "torn.ckpt",
        "not a checkpoint that loads safely",
        args=("--ckpt_path", "{tmp}/torn.ckpt"),
        edit=lambda config, tmp: (tmp / "torn.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint"),
    ),
    # ---- the run folder
    case(
        "runs_dir_under_a_file", "cannot create the run directory", "a_file", "save_dir", edit=runs_under_a_regular_file
    ),
    case(
        "read_only_runs_dir",
        "cannot create the run directory",
        "Permission denied",
        "save_dir",
        edit=read_only_runs,
        marks=NOT_ROOT,
    ),
]


@pytest.mark.parametrize("bad", BATTERY)
def test_bad_input(bad: Bad, tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Exit code 2, one error naming the key, file or row and the fix; no traceback, no run folder, no events."""
    data_files = bad.files(tmp_path) if bad.files else str(sentiment_csv)
    config = text_config(tiny_bert, data_files, tmp_path / "runs", **(bad.data or {}))
    if bad.edit:
        bad.edit(config, tmp_path)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in bad.args]
    code, _, err = run_main("fit", "--config", str(write_yaml(tmp_path / "bad.yaml", config)), *args)
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("tbx-finetune: error: ")]
    if bad.parser:  # jsonargparse: usage, then "error: ..." over a few lines, naming the key and the restriction
        assert not ours and "error: " in err, err[-3000:]
        message = err[err.index("error: ") :]
    else:
        assert len(ours) == 1, err[-3000:]
        message = ours[0]
    for text in bad.expected:
        assert text in message, message
    assert event_files(tmp_path) == [], "something was logged"
    assert not list(tmp_path.rglob("version_*")), "a run folder (and so checkpoints) was created"


def test_bad_input_in_a_new_process(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """The installed entry point behaves as ``main`` does in-process: one line, exit code 2, nothing written."""
    config = write_yaml(tmp_path / "bad.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    result = run_cli("fit", "--config", str(config), "--trainer.max_epochs", "-5")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("tbx-finetune: error: ")]
    assert lines == ["tbx-finetune: error: trainer.max_epochs=-5: use a positive number of epochs, or -1 for no limit"]
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------------------------
# Errors while training: the run stops with one line and keeps what it wrote.


def assert_one_error_line(outcome: tuple[int, str, str], *expected: str) -> str:
    code, _, err = outcome
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tbx-finetune: error: ")]
    assert len(lines) == 1, err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_nan_loss_stops_the_run_with_a_message(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["model"]["init_args"].update(learning_rate=1e30, warmup_ratio=0.0)  # weights overflow after one step
    config["trainer"].update(max_steps=8, log_every_n_steps=1, num_sanity_val_steps=0)
    outcome = run_main("fit", "--config", str(write_yaml(tmp_path / "nan.yaml", config)))
    line = assert_one_error_line(outcome, "train/loss became nan", "learning_rate")
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
    process = start_cli("fit", "--config", config_path, "--last_checkpoint.every_n_train_steps", "2", log=log)
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
    # step 4's save comes after the validation that follows it, so its train/loss (index 3) was logged before
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]
    end = events.PluginTagToContent("hparams")["_hparams_/session_end_info"]
    assert end  # finalized: the session end is recorded and the file closed
