"""``prepare_splits`` on small in-memory datasets: every prepared split's ``labels`` is a ``ClassLabel``."""

from __future__ import annotations

import datasets
import pytest

from common.errors import TbxFinetuneError
from datamodules.splits import LABEL_COLUMN, prepare_splits


def dataset(labels: list, feature: datasets.ClassLabel | datasets.Value | None = None) -> datasets.Dataset:
    columns = {"text": [f"row {i}" for i in range(len(labels))], "label": labels}
    features = datasets.Features({"text": datasets.Value("string"), "label": feature}) if feature else None
    return datasets.Dataset.from_dict(columns, features=features)


def prepare(splits: dict[str, datasets.Dataset], labels: list | None = None, **overrides):
    args = {"val_fraction": 0.25, "test_fraction": 0.25, "max_samples": None, "seed": 0, **overrides}
    return prepare_splits(datasets.DatasetDict(splits), "label", ["text"], labels, **args)


def assert_encoded(split: datasets.Dataset, names: list[str]) -> None:
    """``labels`` is a ClassLabel with ``names``, and each id names the row's source label."""
    feature = split.features[LABEL_COLUMN]
    assert isinstance(feature, datasets.ClassLabel) and feature.names == names
    source = split.features["label"]
    as_text = source.int2str if isinstance(source, datasets.ClassLabel) else str
    assert [names[i] for i in split[LABEL_COLUMN]] == [as_text(v) for v in split["label"]]


def test_string_labels_become_a_class_label_with_sorted_names() -> None:
    splits = {name: dataset(["pos", "neg", "neutral", "pos"]) for name in ("train", "validation", "test")}
    prepared, names = prepare(splits)
    assert names == ["neg", "neutral", "pos"]
    for split in prepared.values():
        assert_encoded(split, names)
        assert split["label"][:] == ["pos", "neg", "neutral", "pos"]  # the source column stays
    assert prepared["val"][LABEL_COLUMN][:] == [2, 0, 1, 2]


def test_carved_val_and_test_splits_carry_the_class_label_too() -> None:
    prepared, names = prepare({"train": dataset(["a", "b"] * 20)})
    assert {name: len(split) for name, split in prepared.items()} == {"train": 22, "val": 8, "test": 10}
    for split in prepared.values():
        assert_encoded(split, ["a", "b"])


def test_int_labels_sort_as_numbers_and_match_names_given_as_strings() -> None:
    prepared, names = prepare({"train": dataset([10, 2, 10, 2] * 4)})
    assert names == ["2", "10"]  # 2 before 10: sorted as numbers, then named by str
    assert_encoded(prepared["train"], names)
    fixed, _ = prepare({"train": dataset([0, 1, 2] * 8)}, labels=["1", "0"])
    assert_encoded(fixed["train"], ["1", "0"])
    assert set(fixed["train"]["label"]) == {0, 1}  # rows labelled 2 are dropped by the labels filter
    as_ints, _ = prepare({"train": dataset([0, 1, 2] * 8)}, labels=[1, 0])
    assert as_ints["train"][LABEL_COLUMN][:] == fixed["train"][LABEL_COLUMN][:]


def test_class_label_in_another_order_is_mapped_by_name_not_by_id() -> None:
    source = datasets.ClassLabel(names=["neg", "neutral", "pos"])
    rows = [0, 1, 2, 2, 0, 1] * 4  # neg, neutral, pos, ...
    splits = {name: dataset(rows, source) for name in ("train", "validation", "test")}
    prepared, names = prepare(splits, labels=["pos", "neg"])
    assert names == ["pos", "neg"]
    for split in prepared.values():
        assert_encoded(split, names)
        assert len(split) == 16  # the 'neutral' rows are gone
    assert prepared["val"]["label"][:4] == [0, 2, 2, 0]  # source ids: neg, pos, pos, neg
    assert prepared["val"][LABEL_COLUMN][:4] == [1, 0, 0, 1]  # new ids by name: neg=1, pos=0


def test_class_label_names_keep_their_own_order_without_a_labels_list() -> None:
    source = datasets.ClassLabel(names=["zz", "aa"])
    prepared, names = prepare({"train": dataset([0, 1] * 10, source)})
    assert names == ["zz", "aa"]
    for split in prepared.values():
        assert_encoded(split, names)


def test_label_column_named_labels_is_encoded_in_place() -> None:
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"] * 8, "labels": ["b", "a"] * 4})})
    prepared, names = prepare_splits(loaded, LABEL_COLUMN, ["text"], None, 0.25, 0.25, None, 0)
    assert names == ["a", "b"] and prepared["train"].features[LABEL_COLUMN].names == names


def test_label_unseen_in_train_names_the_split_and_column_and_lists_ten() -> None:
    unseen = [f"new{i:02d}" for i in range(12)]
    splits = {"train": dataset(["pos", "neg"] * 4), "validation": dataset(["pos", *reversed(unseen)])}
    with pytest.raises(TbxFinetuneError) as error:
        prepare(splits)
    message = str(error.value)
    assert message.startswith(f"val split: labels {unseen[:10]} in column 'label' do not occur in the training labels")
    assert "['neg', 'pos']" in message and "data.labels" in message


@pytest.mark.parametrize(
    ("labels", "feature"),
    [
        (["pos", None, "neg", "pos", None], None),  # an empty CSV cell
        (["pos", "", "neg", "pos", "  "], None),  # a blank string (JSON)
        ([1, None, 0, 1, None], datasets.Value("int64")),
        ([1, -1, 0, 1, -1], datasets.ClassLabel(names=["neg", "pos"])),  # how hub test splits mark "no label"
    ],
)
@pytest.mark.parametrize("where", ["train", "validation"])
def test_missing_labels_are_one_clear_error(labels: list, feature, where: str) -> None:
    good = dataset([labels[0], labels[2]] * 3, feature)
    splits = {"train": good, "validation": good, "test": good, where: dataset(labels, feature)}
    with pytest.raises(TbxFinetuneError) as error:
        prepare(splits)
    assert str(error.value).startswith(f"{where} split: 2 of 5 rows have no label in column 'label'")
    assert "rows [1, 4]" in str(error.value)


def test_missing_labels_are_an_error_even_with_a_labels_filter() -> None:
    """A blank is a data error, not a row of another class for ``data.labels`` to drop silently."""
    with pytest.raises(TbxFinetuneError, match="train split: 1 of 9 rows have no label"):
        prepare({"train": dataset(["a", "b", "c"] * 2 + ["a", None, "b"])}, labels=["a", "b"])


def test_an_unused_unlabelled_split_is_not_an_error() -> None:
    source = datasets.ClassLabel(names=["neg", "pos"])
    splits = {"train": dataset([0, 1] * 6, source), "unsupervised": dataset([-1] * 4, source)}  # as IMDB ships it
    prepared, names = prepare(splits)
    assert names == ["neg", "pos"] and set(prepared) == {"train", "val", "test"}


def test_repeated_names_in_the_labels_list_are_an_error() -> None:
    with pytest.raises(TbxFinetuneError, match=r"data.labels lists \['a'\] more than once"):
        prepare({"train": dataset(["a", "b"] * 6)}, labels=["a", "b", "a"])


def test_a_label_column_of_lists_is_an_error() -> None:
    with pytest.raises(TbxFinetuneError, match="train split: column 'label' holds List"):
        prepare({"train": dataset([["a"], ["b"]] * 6)})


def test_a_class_without_training_examples_is_an_error() -> None:
    """Named in data.labels or in a ClassLabel, but absent from train: the model would never see it."""
    splits = {"train": dataset(["pos", "neg"] * 4), "test": dataset(["pos", "neg", "neutral"])}
    with pytest.raises(TbxFinetuneError, match=r"train split: class\(es\) \['neutral'\] have no examples"):
        prepare(splits, labels=["pos", "neg", "neutral"])
    named = datasets.ClassLabel(names=["cat", "dog", "bird"])
    with pytest.raises(TbxFinetuneError, match=r"\['bird'\] have no examples"):
        prepare({"train": dataset([0, 1] * 8, named)})
