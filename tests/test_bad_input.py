"""Bad input fails fast: non-zero exit, one clear message naming what to fix, and no training at all."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import event_files, run_cli, text_config, write_yaml


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
