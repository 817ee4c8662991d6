"""The text datamodule's splits, labels and caching, and the module's optimizer recipe (in-process)."""

from __future__ import annotations

import csv
from pathlib import Path

import datasets
import pytest
from lightning.pytorch import Trainer

from common.errors import TbxFinetuneError
from datamodules import TextDataModule
from modules import TextClassifier


def make_datamodule(csv_path: Path, tokenizer: Path, **kwargs) -> TextDataModule:
    args = {"text_column": "sentence", "label_column": "sentiment", "batch_size": 8, **kwargs}
    return TextDataModule(data_files=str(csv_path), tokenizer=str(tokenizer), **args)


def test_held_out_splits_are_seeded_and_disjoint(sentiment_csv: Path, tiny_bert: Path) -> None:
    first, second = (make_datamodule(sentiment_csv, tiny_bert) for _ in range(2))
    other_seed = make_datamodule(sentiment_csv, tiny_bert, seed=1)
    for dm in (first, second, other_seed):
        dm.setup("fit")
        dm.setup("test")
    sizes = {name: len(split) for name, split in first._splits.items()}
    assert sizes == {"train": 129, "val": 15, "test": 16}
    rows = {name: split["sentence"] for name, split in first._splits.items()}
    assert rows["val"] == second._splits["val"]["sentence"]  # same seed, same held-out rows
    assert rows["val"] != other_seed._splits["val"]["sentence"]
    train_rows = list(zip(first._splits["train"]["sentence"], first._splits["train"]["sentiment"], strict=True))
    held_out = [
        list(zip(first._splits[n]["sentence"], first._splits[n]["sentiment"], strict=True)) for n in ("val", "test")
    ]
    assert len(train_rows) + sum(map(len, held_out)) == 160  # a partition of the 160 rows, no row twice
    assert first.label_names == ["neg", "pos"] and first.num_labels == 2


def test_labels_filter_rows_and_fix_the_order(tmp_path: Path, tiny_bert: Path) -> None:
    path = tmp_path / "three.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sentence", "sentiment"])
        for i in range(60):
            out.writerow([f"good film {i}", ("fresh", "rotten", "plot")[i % 3]])
    dm = make_datamodule(path, tiny_bert, labels=["rotten", "fresh"])
    assert dm.label_names == ["rotten", "fresh"]
    dm.setup("fit")
    assert sum(len(s) for s in dm._splits.values()) == 40  # the 20 'plot' rows are gone
    train = dm._splits["train"]
    for label_id, name in zip(train["labels"], train["sentiment"], strict=True):
        assert dm.label_names[label_id] == name


def test_class_label_names_come_from_the_feature(tmp_path: Path, tiny_bert: Path) -> None:
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "sentiment": datasets.ClassLabel(names=["zz", "aa"])}
    )
    data = datasets.Dataset.from_dict({"sentence": ["good", "bad"] * 10, "sentiment": [0, 1] * 10}, features=features)
    data.to_parquet(tmp_path / "train.parquet")
    # parquet keeps the ClassLabel feature; names keep their order (not sorted)
    dm = make_datamodule(tmp_path / "train.parquet", tiny_bert, val_fraction=0.2, test_fraction=0.2)
    assert dm.label_names == ["zz", "aa"]


def test_max_samples_per_split_and_unknown_split_key(sentiment_csv: Path, tiny_bert: Path) -> None:
    dm = make_datamodule(sentiment_csv, tiny_bert, max_samples={"train": 20, "val": 5})
    dm.setup("fit")
    assert (len(dm._splits["train"]), len(dm._splits["val"]), len(dm._splits["test"])) == (20, 5, 16)
    with pytest.raises(TbxFinetuneError, match="max_samples has unknown split"):
        make_datamodule(sentiment_csv, tiny_bert, max_samples={"training": 20}).setup("fit")


def test_tokenised_splits_are_cached_and_padded_dynamically(sentiment_csv: Path, tiny_bert: Path) -> None:
    dm = make_datamodule(sentiment_csv, tiny_bert, max_length=32)
    dm.setup("fit")
    assert dm.tokenized["train"].cache_files  # datasets wrote the map result to its on-disk cache
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] < 32  # padded to the batch
    assert batch["input_ids"].shape[0] == 8


def test_model_loads_in_train_mode_with_a_head_for_the_labels(tiny_bert: Path) -> None:
    module = TextClassifier(str(tiny_bert), num_labels=3, label_names=["a", "b", "c"])
    assert module.model.training
    assert module.model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert module.model.classifier.out_features == 3


def test_weight_decay_skips_biases_and_norms_and_warmup_is_linear(tiny_bert: Path) -> None:
    module = TextClassifier(str(tiny_bert), num_labels=2, warmup_ratio=0.5, learning_rate=1e-3)
    trainer = Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.trainer = trainer
    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    names = {id(p): n for n, p in module.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all(
        names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] or "embeddings" in names[id(p)]
        for p in no_decay["params"]
    )
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.parameters()))
    scheduler = config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        config["optimizer"].step()
        scheduler.step()
    assert rates[:6] == pytest.approx([0.0, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert rates[-1] == pytest.approx(2e-4)
