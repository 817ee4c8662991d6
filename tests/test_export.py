"""``fit --export_pretrained`` for text: the best checkpoint as a Hugging Face folder with its tokenizer and
label names, which ``transformers.pipeline`` and our own CLI load and which predict exactly what we predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli, text_config, write_yaml

from common.errors import TbxFinetuneError
from modules import TextClassifier

LABELS = ["pos", "neg"]  # not sorted: the folder must keep the data's id order, not an alphabetical one


def read_predictions(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> dict:
    """Fit the tiny BERT for 3 epochs with an export, then predict the test split from the best checkpoint.

    With the plain shuffle at the tests' seed, val/acc reaches 1.0 in epoch 1 and ties in epoch 2; ModelCheckpoint
    keeps the first best, so the weights in memory when fit ends (epoch 2) are not the best ones, and only an export
    of the best checkpoint predicts what that checkpoint predicts.
    """
    tmp = tmp_path_factory.mktemp("export")
    config = write_yaml(tmp / "fit.yaml", text_config(tiny_bert, str(sentiment_csv), tmp / "runs", labels=LABELS))
    folder = tmp / "export"
    fit = run_cli(
        "fit",
        "--config", str(config),
        "--model.init_args.learning_rate", "1e-2",
        "--trainer.max_epochs", "3",
        "--data.init_args.group_by_length", "false",  # the order whose trajectory is described above
        "--export_pretrained", str(folder),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    (best,) = (tmp / "runs" / "test" / "version_0" / "checkpoints").glob("epoch*.ckpt")  # top-1 on val/acc
    assert best.name.startswith("epoch1-"), "the best must not be the last epoch, or best and last look alike"
    out = tmp / "from_checkpoint.csv"
    predict = run_cli(
        "predict", "--config", str(config), "--ckpt_path", str(best), "--predictions.output_path", str(out)
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    return {"config": config, "folder": folder, "fit": fit, "best": best, "predictions": read_predictions(out)}


def pipeline_predictions(folder: Path, texts: list[str]) -> list[dict]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device="cpu")
    return classify(texts)


def test_export_folder_holds_model_tokenizer_and_label_names(exported: dict) -> None:
    folder = exported["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "pos", "1": "neg"} and config["label2id"] == {"pos": 0, "neg": 1}
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer_config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert f"exported {exported['best']}" in exported["fit"].stdout + exported["fit"].stderr  # the best, not last


def test_pipeline_on_export_predicts_label_names_like_our_predict(exported: dict) -> None:
    ours = exported["predictions"]
    assert len(ours) == 16 and {row["label"] for row in ours} == set(LABELS)  # the model learned both classes
    theirs = pipeline_predictions(exported["folder"], [row["input"] for row in ours])
    assert [p["label"] for p in theirs] == [row["label"] for row in ours]  # names, not LABEL_0
    for p, row in zip(theirs, ours, strict=True):
        assert p["score"] == pytest.approx(float(row["probability"]), abs=1e-5)


def test_export_loads_as_model_name_or_path_and_predicts_the_same(exported: dict, tmp_path: Path) -> None:
    out = tmp_path / "from_export.csv"
    result = run_cli(
        "predict",
        "--config", str(exported["config"]),
        "--model.init_args.model_name_or_path", str(exported["folder"]),  # the tokenizer follows (linked)
        "--predictions.output_path", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_predictions(out)
    theirs = pipeline_predictions(exported["folder"], [row["input"] for row in rows])
    assert [row["label"] for row in rows] == [p["label"] for p in theirs]
    for p, row in zip(theirs, rows, strict=True):
        assert float(row["probability"]) == pytest.approx(p["score"], abs=1e-5)
    ours = exported["predictions"]  # and what the best checkpoint predicts (the tokenizer came along, too)
    assert [row["input"] for row in rows] == [row["input"] for row in ours]
    assert [row["label"] for row in rows] == [row["label"] for row in ours]
    for row, best in zip(rows, ours, strict=True):
        assert float(row["probability"]) == pytest.approx(float(best["probability"]), abs=1e-5)


def test_export_reused_with_its_labels_in_another_order_is_refused(exported: dict) -> None:
    """The head's rows follow the export's label order: the same classes sorted otherwise would swap every name."""
    with pytest.raises(TbxFinetuneError, match=r"fine-tuned on the labels \['pos', 'neg'\] in that order"):
        TextClassifier(str(exported["folder"]), num_labels=2, label_names=["neg", "pos"])
    assert TextClassifier(str(exported["folder"]), num_labels=2, label_names=LABELS).label_names == LABELS


def test_text_export_without_a_tokenizer_names_what_is_missing(tiny_bert: Path, tmp_path: Path) -> None:
    model = TextClassifier(str(tiny_bert), num_labels=2, label_names=LABELS)
    with pytest.raises(TbxFinetuneError, match="tokenizer"):
        model.export_pretrained(str(tmp_path / "export"), object())
    assert not (tmp_path / "export").exists()
