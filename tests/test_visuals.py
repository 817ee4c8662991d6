"""The visual record (configs/visuals.yaml), read back the way TensorBoard reads it: events, projector files."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_events, run_cli, text_config, write_yaml, writers
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tensorboard.util import tensor_util
from tiny_assets import NEGATIVE, NEUTRAL, POSITIVE

from loggers.record import tensorboard_records
from loggers.tensorboardx import TensorBoardXLogger
from loggers.visuals import _write_examples, describe_inputs, render_confusion_matrix

REPO = Path(__file__).resolve().parents[1]
VAL_ROWS = 15  # 160 rows: 16 test, 15 validation, 129 train (see conftest.sentiment_csv)


def val_label_counts(csv_path: Path) -> dict[str, int]:
    """Label counts of the validation split, from the datamodule itself (the split is seeded)."""
    from datamodules.text import TextDataModule

    data = TextDataModule(data_files=str(csv_path), text_column="sentence", label_column="sentiment")
    names = data.label_names  # the same defaults (seed, fractions) as the CLI run's config
    labels = data._splits["val"]["labels"]
    return {name: labels.count(i) for i, name in enumerate(names)}


@pytest.fixture(scope="module")
def visual_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> Path:
    tmp = tmp_path_factory.mktemp("visuals")
    config = write_yaml(tmp / "fit.yaml", text_config(tiny_bert, str(sentiment_csv), tmp / "runs"))
    result = run_cli(
        "fit", "--config", str(config), "--config", str(REPO / "configs" / "visuals.yaml"),
        "--grad_norms.every_n_steps", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "runs" / "test" / "version_0"


def test_confusion_matrix_image_and_per_class_scalars(visual_run: Path, sentiment_csv: Path) -> None:
    events = load_events(visual_run)
    val_steps = [e.step for e in events.Scalars("val/acc")]
    images = events.Images("val/confusion_matrix")
    assert [i.step for i in images] == val_steps  # once per validation epoch, not during the sanity check
    picture = Image.open(io.BytesIO(images[-1].encoded_image_string))
    assert picture.size == (images[-1].width, images[-1].height) and picture.mode == "RGB"
    assert len(np.unique(np.asarray(picture).reshape(-1, 3), axis=0)) > 10  # a drawing, not a blank canvas
    # per-class recall from our confusion matrix, weighted by class support, is torchmetrics' accuracy
    support = val_label_counts(sentiment_csv)
    for index, step in enumerate(val_steps):
        recall = {name: events.Scalars(f"val/recall/{name}")[index] for name in support}
        assert all(r.step == step and 0.0 <= r.value <= 1.0 for r in recall.values())
        weighted = sum(recall[name].value * count for name, count in support.items()) / VAL_ROWS
        assert weighted == pytest.approx(events.Scalars("val/acc")[index].value, abs=1e-6)
        for name in support:
            assert 0.0 <= events.Scalars(f"val/precision/{name}")[index].value <= 1.0


def test_pr_curves_hold_consistent_counts(visual_run: Path, sentiment_csv: Path) -> None:
    events = load_events(visual_run)
    support = val_label_counts(sentiment_csv)
    for name, positives in support.items():
        curves = events.Tensors(f"val/pr/{name}")
        assert len(curves) == len(events.Scalars("val/acc"))
        # TensorBoard's pr_curve layout: rows TP, FP, TN, FN, precision, recall; one column per threshold
        data = tensor_util.make_ndarray(curves[-1].tensor_proto)
        assert data.shape == (6, 127)
        tp, fp, tn, fn, precision, recall = data
        np.testing.assert_allclose(tp + fp + tn + fn, VAL_ROWS)
        np.testing.assert_allclose(tp + fn, positives)
        assert tp[0] == positives and fp[0] == VAL_ROWS - positives  # threshold 0 predicts every example
        assert np.all(np.diff(tp) <= 0) and np.all((0 <= precision) & (precision <= 1)) and recall[0] == 1.0


def test_misclassified_examples_table(visual_run: Path) -> None:
    events = load_events(visual_run)
    tables = events.Tensors("val/misclassified")
    accuracies = events.Scalars("val/acc")
    vocabulary = set(POSITIVE + NEGATIVE + NEUTRAL)
    for table, accuracy in zip(tables, accuracies, strict=False):
        assert not table.tensor_proto.tensor_shape.dim  # one markdown string, not a one-cell table
        lines = table.tensor_proto.string_val[0].decode().splitlines()
        assert lines[0] == "| text | label | predicted | probability |"
        rows = lines[2:]
        assert len(rows) == round((1 - accuracy.value) * VAL_ROWS)  # every misclassified example, no other
        for row in rows:
            text, label, predicted, probability = (cell.strip() for cell in row.strip("|").split("|"))
            assert text and set(text.split()) <= vocabulary  # the decoded review, not token ids
            assert label != predicted and 0.5 <= float(probability) <= 1.0


def test_embeddings_are_readable_by_the_projector(visual_run: Path) -> None:
    config = text_format.Parse((visual_run / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert len(config.embeddings) == len(load_events(visual_run).Scalars("val/acc"))
    for embedding in config.embeddings:
        vectors = np.loadtxt(visual_run / embedding.tensor_path, delimiter="\t", ndmin=2)
        assert vectors.shape == (VAL_ROWS, 32)  # every validation example, the tiny BERT's hidden size
        with (visual_run / embedding.metadata_path).open(encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["label", "predicted", "correct", "confidence", "text"] and len(rows) == VAL_ROWS + 1
        assert {row[0] for row in rows[1:]} == {"neg", "pos"}
        assert all(row[2] == str(row[0] == row[1]).lower() and 0.5 <= float(row[3]) <= 1 for row in rows[1:])
        assert all(row[4] and "\t" not in row[4] and "\n" not in row[4] for row in rows[1:])


def test_logit_histograms_graph_and_gradient_histograms(visual_run: Path) -> None:
    events = load_events(visual_run)
    for name in ("neg", "pos"):
        histograms = events.Histograms(f"val/logits/{name}")
        assert histograms and all(h.histogram_value.num == VAL_ROWS for h in histograms)
    graph = events.Graph()
    assert any(node.name.startswith("input/") for node in graph.node) and len(graph.node) > 50
    tags = set(events.Tags()["histograms"])
    assert {"grad_norm/per_param", "grad/classifier", "weight/bert.encoder.layer.1"} <= tags
    assert [h.step for h in events.Histograms("grad_norm/per_param")] == [0, 3, 6, 9, 12, 15]
    assert len(writers(visual_run)) == 1


def test_misclassified_images_become_a_grid(tmp_path: Path) -> None:
    """Image models: the misclassified examples are drawn as one titled grid image."""

    class Batchless:
        datamodule = None

    images = torch.rand(5, 1, 12, 12) * 7 - 3  # normalised pixels, any range
    shown = describe_inputs(Batchless(), {"pixel_values": images, "labels": None}, [0, 2, 4])
    assert len(shown) == 3 and all(float(x.min()) == 0.0 and math.isclose(float(x.max()), 1.0) for x in shown)
    logger = TensorBoardXLogger(save_dir=str(tmp_path), name="grid")
    (record,) = tensorboard_records([logger])
    _write_examples(record, [(image, "3", "8", 0.91) for image in shown], step=4)
    logger.finalize("success")
    grid = load_events(Path(logger.log_dir)).Images("val/misclassified")
    assert [g.step for g in grid] == [4] and grid[0].width > 100


def test_confusion_matrix_drawing_leaves_no_pyplot_figure_open() -> None:
    """torchmetrics' ``plot`` draws onto our own Agg figure: epoch after epoch, pyplot holds no figure."""
    import matplotlib.pyplot as plt
    from torchmetrics.classification import MulticlassConfusionMatrix

    metric = MulticlassConfusionMatrix(3)
    metric.update(torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 1, 1, 2, 0]))
    open_before = plt.get_fignums()
    for _ in range(3):
        image = render_confusion_matrix(metric, metric.compute(), ["a", "b", "c"])
    assert plt.get_fignums() == open_before
    assert image.dtype == torch.uint8 and image.shape[-1] == 3 and image.shape[0] == 400  # 4-inch figure, 100 dpi
    assert len(np.unique(image.reshape(-1, 3).numpy(), axis=0)) > 10


def test_visuals_are_synced_across_ddp_ranks(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Under 2-process DDP the set-wide visuals count the whole validation set, not rank 0's half."""
    config = write_yaml(tmp_path / "fit.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    result = run_cli(
        "fit", "--config", str(config), "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.max_epochs", "1", "--visuals.pr_curves", "true", "--visuals.logit_histograms", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = writers(tmp_path / "runs")  # one writer: global rank 0
    events = load_events(written[0])
    # Lightning's DistributedSampler pads validation to a multiple of the world size: 15 rows → 2 × 8
    padded = 2 * math.ceil(VAL_ROWS / 2)
    assert events.Histograms("val/logits/pos")[-1].histogram_value.num == padded
    tp, fp, tn, fn, *_ = tensor_util.make_ndarray(events.Tensors("val/pr/pos")[-1].tensor_proto)
    np.testing.assert_allclose(tp + fp + tn + fn, padded)


def test_image_model_gets_the_same_record_with_an_image_grid(tmp_path: Path) -> None:
    """A tiny ResNet on real MNIST digits with configs/visuals.yaml: misclassified digits become one grid."""
    from test_vision import TINY_RESNET, image_config

    config = write_yaml(tmp_path / "fit.yaml", image_config(tmp_path / "runs", {"resnet": TINY_RESNET}))
    result = run_cli("fit", "--config", str(config), "--config", str(REPO / "configs" / "visuals.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "vision" / "version_0"
    events = load_events(run_dir)
    val_steps = [e.step for e in events.Scalars("val/acc")]
    assert {"val/confusion_matrix", "val/misclassified"} <= set(events.Tags()["images"])
    assert [i.step for i in events.Images("val/misclassified")] == val_steps
    assert events.Images("val/misclassified")[0].width > 200  # a titled grid, not one digit
    assert {f"val/pr/{digit}" for digit in "0123456789"} <= set(events.Tags()["tensors"])
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    vectors = np.loadtxt(run_dir / config.embeddings[0].tensor_path, delimiter="\t", ndmin=2)
    assert vectors.shape[0] == 32  # the validation split (max_samples val: 32), the head's pooled input
    assert config.embeddings[0].sprite.image_path  # each point drawn as its digit
    assert events.Graph().node
