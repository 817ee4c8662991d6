"""``app.cli report``: run folders → index.html, charts, scalars.csv and summary.csv, read back against TensorBoard.

One real run through the CLI (fit, then test_after_fit in its own events files, visuals on); every other record is
written by the project's own logger (HPARAMS, session ends, purge on resume) or, for a record of another tool, by a
bare tensorboardX writer. Every number the report gives is compared with what ``EventAccumulator`` reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from conftest import load_events, run_cli, run_main, text_config, write_yaml
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX import SummaryWriter

from app import report
from loggers.tensorboardx import TensorBoardXLogger

EVIL = "<script>alert(1)</script>"


# --------------------------------------------------------------------------------------------------------- records
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> Path:
    """A real run: 2 epochs of 4 steps, validation each epoch, test after fit, confusion matrix, grad norms."""
    tmp = tmp_path_factory.mktemp("report_cli")
    config = text_config(tiny_bert, str(sentiment_csv), tmp / "runs")
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=1, log_every_n_steps=1)
    config.update(test_after_fit=True, grad_norms={"every_n_steps": 1}, visuals={"confusion_matrix": True})
    result = run_cli("fit", "--config", str(write_yaml(tmp / "fit.yaml", config)))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "runs" / "test" / "version_0"


def hparams(seed: int = 1, lr: float = 1e-3) -> dict:
    return {
        "seed_everything": seed,
        "model.init_args.learning_rate": lr,
        "model": "tiny",
        "trainer.max_epochs": 3,
        "batch_size_effective": 16,
    }


def label_table(counts: dict[str, dict[str, int]]) -> str:
    classes = list(next(iter(counts.values())))
    lines = ["| split | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    lines += [f"| {split} | " + " | ".join(str(row[c]) for c in classes) + " |" for split, row in counts.items()]
    return "\n".join(lines)


def logged_session(
    root: Path,
    name: str,
    steps: range,
    params: dict,
    end: str | None = "success",
    purge_step: int | None = None,
    offset: float = 0.0,
    classes: tuple[str, ...] = ("neg", "pos"),
    texts: dict[str, tuple[int, str]] | None = None,
) -> Path:
    """One fit session through the project's logger: train/loss every step, val metrics every 4th; ``end=None``
    leaves it as a kill would (events on disk, no session end)."""
    logger = TensorBoardXLogger(save_dir=str(root), name=name, version=0, purge_step=purge_step)
    logger.log_hyperparams(params)
    for step in steps:
        logger.log_metrics({"train/loss": 1.0 / (step + 1) + offset, "lr-AdamW/decay": 1e-3 * (1 - step / 100)}, step)
        if step % 4 == 3:
            val = {"val/loss": 0.9 - step / 100 + offset, "val/acc": 0.5 + step / 100 - offset, "health/alerts": 0.0}
            val |= {f"val/recall/{c}": 0.5 + i * step / 100 + offset for i, c in enumerate(classes)}
            logger.log_metrics(val, step)
    for tag, (step, text) in (texts or {}).items():
        logger.experiment.add_text(tag, text, global_step=step)
    if end is None:
        logger.experiment.close()
    else:
        logger.finalize(end)
    return root / name / "version_0"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_runs")
    counts = {"train": {"neg": 60, "pos": 40}, "val": {"neg": 6, "pos": 4}, "test": {"neg": 7, "pos": 3}}
    alert = {"health/exploding": (5, "step 5: gradient norm 12 is 11.0x its running median 1.1 (threshold 10x)")}
    table = {"data/label_counts": (0, label_table(counts))}
    runs = {
        "seed1": logged_session(root, "seed1", range(12), hparams(seed=1), texts=table | alert),
        "seed2": logged_session(root, "seed2", range(12), hparams(seed=2), offset=0.05, texts=table),
        "other_lr": logged_session(root, "other_lr", range(12), hparams(lr=5e-5), offset=0.1),
        "failed": logged_session(root, "failed", range(5), hparams(), end="failed"),
        "killed": logged_session(root, "killed", range(7), hparams(), end=None),
    }
    # killed after step 9, resumed from the step-6 checkpoint in the same folder, finished: steps 6..9 are replaced
    logged_session(root, "resumed", range(10), hparams(), end=None, offset=0.5)
    runs["resumed"] = logged_session(root, "resumed", range(6, 12), hparams(), purge_step=6)
    evil_counts = {"train": {"neg": 50, EVIL: 30, "neutral": 20}, "test": {"neg": 5, EVIL: 3, "neutral": 2}}
    evil_texts = {"data/label_counts": (0, label_table(evil_counts))}
    evil_name = f"x{EVIL.replace('/', '')}"  # a folder name cannot hold the slash
    classes = ("neg", EVIL, "neutral")
    runs["evil"] = logged_session(root, evil_name, range(8), hparams(), classes=classes, texts=evil_texts)
    runs["long"] = root / "other_tool" / "long"
    with SummaryWriter(str(runs["long"])) as writer:  # another tool's record: no HPARAMS, no config.yaml
        for step in range(12_000):
            writer.add_scalar("train/loss", 2.0 / (1 + step / 100), step)
            if step % 1000 == 999:
                writer.add_scalar("val/acc", step / 12_000, step)
    return runs


def build(tmp_path: Path, *runs: Path) -> tuple[Path, str]:
    out = tmp_path / "report"
    index = report.write_report(list(runs), out)
    return out, index.read_text(encoding="utf-8")


def accumulated(run: Path) -> dict[str, list]:
    events = load_events(run)
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip", keep_default_na=False, na_values=[""])


# ----------------------------------------------------------------------------------------------------------- tests
def test_one_real_run_through_the_cli(cli_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code, stdout, stderr = run_main("report", str(cli_run), "-o", str(out))
    assert code == 0, stderr[-3000:]
    page = (out / "index.html").read_text(encoding="utf-8")
    events = load_events(cli_run)

    summary = read_csv(out / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "ended"] == "finished" and pd.isna(summary.loc[0, "resumed at"])
    for tag in [t for t in events.Tags()["scalars"] if t.split("/")[0] in ("train", "val", "test")]:
        points = events.Scalars(tag)
        final = (summary.loc[0, f"{tag} final"], summary.loc[0, f"{tag} final step"])
        assert final == (points[-1].value, points[-1].step), tag
        pick = max if report.direction(tag) == "max" else min
        best = pick(points, key=lambda e: e.value)  # the first of equal values, as the report
        assert summary.loc[0, f"{tag} best"] == best.value and summary.loc[0, f"{tag} best step"] == best.step, tag
    assert {"test/acc final", "val/acc final", "train/acc final"} <= set(summary.columns)  # test in its own file

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    recorded = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    for key, column in {"seed_everything": "seed", "model.init_args.learning_rate": "learning rate"}.items():
        assert summary.loc[0, column] == recorded[key].number_value

    scalars = read_csv(out / "scalars.csv")
    assert list(scalars.columns) == ["run", "tag", "step", "wall_time", "value"]
    for tag, points in accumulated(cli_run).items():
        rows = scalars[scalars["tag"] == tag]
        assert rows["step"].tolist() == [e.step for e in points] and rows["value"].tolist() == [e.value for e in points]
        assert rows["wall_time"].tolist() == [e.wall_time for e in points]

    sections = ("Hyperparameters", "Full configuration (config.yaml)", "Metrics", "How it ended: <b>finished")
    for section in (*sections, "Confusion matrix", "Health alerts"):
        assert section in page, section
    assert "learning rate" in page and "val accuracy" in page  # HPARAMS display names
    if "data/label_counts" in [t.removesuffix("/text_summary") for t in events.Tags()["tensors"]]:
        assert "majority-class baseline" in page
    assert_self_contained(out, page)
    assert {"run0_loss.png", "run0_accuracy.png", "run0_lr.png", "run0_confusion_matrix.png"} <= names(out)


def test_load_runs_returns_what_the_csv_files_hold(synthetic: dict[str, Path], tmp_path: Path) -> None:
    runs = [synthetic["seed1"], synthetic["resumed"]]
    scalars, summary = report.load_runs(runs)
    out, _ = build(tmp_path, *runs)
    pd.testing.assert_frame_equal(read_csv(out / "scalars.csv"), scalars, check_dtype=False)
    written = read_csv(out / "summary.csv")
    assert list(written.columns) == list(summary.columns)
    numeric = [c for c in summary.columns if pd.api.types.is_numeric_dtype(summary[c])]
    pd.testing.assert_frame_equal(written[numeric], summary[numeric], check_dtype=False)


def test_resumed_run_shows_the_purged_record_and_where_it_resumed(synthetic: dict[str, Path], tmp_path: Path) -> None:
    run = synthetic["resumed"]
    scalars, summary = report.load_runs([run])
    loss = scalars[scalars["tag"] == "train/loss"]
    assert loss["step"].tolist() == list(range(12))  # each step once: the second session's 6..9 replaced the first's
    assert loss["value"].tolist() == [e.value for e in accumulated(run)["train/loss"]]
    assert loss["value"].iloc[5] == pytest.approx(1 / 6 + 0.5) and loss["value"].iloc[6] == pytest.approx(1 / 7)
    assert summary.loc[0, "ended"] == "finished" and summary.loc[0, "resumed at"] == "6"
    _, page = build(tmp_path, run)
    assert "finished; resumed at step 6" in page and "session 1: steps 0–9, no session end" in page


@pytest.mark.parametrize(
    ("key", "state", "shown"),
    [
        ("failed", "failed", "interrupted or crashed"),
        ("killed", "no end", "still running, or killed"),
        ("long", "unknown", "not recorded"),
    ],
)
def test_how_the_run_ended(synthetic: dict[str, Path], key: str, state: str, shown: str) -> None:
    record = report.read_run(synthetic[key])
    assert record.ending.state == state and shown in record.ending.text


def test_several_runs_compare_group_seeds_and_warn(synthetic: dict[str, Path], tmp_path: Path) -> None:
    runs = [synthetic["seed1"], synthetic["seed2"], synthetic["other_lr"], synthetic["evil"]]
    records = report.read_runs(runs)
    groups = report.seed_groups(records)
    assert [g.members for g in groups] == [(0, 1)] and groups[0].seeds == (1, 2)
    differ = report.differing_hparams(records)
    assert {"seed", "learning rate"} <= set(differ.index) and "model" not in differ.index
    warnings = report.comparability_warnings(records)
    assert any("different label sets" in w for w in warnings) and any("amounts of data" in w for w in warnings)

    out, page = build(tmp_path, *runs)
    summary = read_csv(out / "summary.csv")
    assert summary["run"].tolist() == [r.name for r in records]
    best = summary.loc[summary["val/acc final"].idxmax(), "run"]
    assert best == "seed1/version_0" and re.search(r'<td class="best num">[^<]*★</td>', page)
    sections = ("Comparison of 4 runs", "Settings that differ", "Final metrics", "Same settings, different seeds")
    for section in (*sections, "Per-class recall", "Not comparable"):
        assert section in page, section
    assert groups[0].label(records) == "seed1/version_0 +1 (seeds 1, 2: mean ± std)"  # the band's legend entry
    assert {"compare_loss.png", "compare_accuracy.png", "compare_lr.png"} <= names(out)
    assert "gradient norm 12 is 11.0x" in page  # the health alert, listed under its run
    assert_self_contained(out, page)


def test_names_and_labels_stay_text(synthetic: dict[str, Path], tmp_path: Path) -> None:
    record = report.read_run(synthetic["evil"])
    assert EVIL in record.labels and record.baseline.label == "neg"
    assert EVIL in report.per_class_table([record]).index  # its scalar tag holds the tag-safe name; shown as labelled
    _, page = build(tmp_path, synthetic["evil"], synthetic["seed1"])
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the class, as text
    assert "x&lt;script&gt;alert(1)&lt;script&gt;/version_0" in page  # the run folder's name


def test_long_run_keeps_every_point(synthetic: dict[str, Path], tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    out, page = build(tmp_path, synthetic["long"])
    scalars = read_csv(out / "scalars.csv")
    loss = scalars[scalars["tag"] == "train/loss"]
    assert loss["step"].tolist() == list(range(12_000))
    assert loss["value"].tolist() == [e.value for e in accumulated(synthetic["long"])["train/loss"]]
    summary = read_csv(out / "summary.csv")
    assert summary.loc[0, "train/loss final step"] == 11_999 and summary.loc[0, "val/acc best step"] == 11_999
    assert "The record has no HPARAMS session" in page and "No test phase in the record" in page
    assert matplotlib.get_backend() == backend  # no backend switch, and no pyplot figure left open
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_majority_baseline_from_label_counts(synthetic: dict[str, Path]) -> None:
    record = report.read_run(synthetic["seed1"])
    assert record.label_counts == {
        "train": {"neg": 60, "pos": 40},
        "val": {"neg": 6, "pos": 4},
        "test": {"neg": 7, "pos": 3},
    }
    baseline = record.baseline
    assert (baseline.split, baseline.label, baseline.accuracy) == ("val", "neg", 0.6)  # its accuracy is val's
    assert report.read_run(synthetic["other_lr"]).baseline is None  # no label counts: no baseline
    assert report.parse_label_counts("| split | a\\|b | c |\n|---|---|---|\n| val | 2 | 3 |") == {
        "val": {"a|b": 2, "c": 3}
    }
    assert report.parse_label_counts("not a table") is None


def test_a_folder_that_is_not_a_run_is_one_line_exit_2(synthetic: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    for folder, hint in ((empty, "not a run folder"), (tmp_path / "missing", "no such folder")):
        code, _, stderr = run_main("report", str(synthetic["seed1"]), str(folder), "-o", str(out))
        assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("tbx-finetune: error: "), stderr
        assert hint in stderr and "Traceback" not in stderr
        assert not out.exists()  # nothing written
    code, _, stderr = run_main("report", str(synthetic["seed1"].parent), "-o", str(out))  # the experiment, not a run
    assert code == 2 and str(synthetic["seed1"]) in stderr and not out.exists()


# --------------------------------------------------------------------------------------------------------- helpers
def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def assert_self_contained(out: Path, page: str) -> None:
    """No script, no stylesheet or other file from elsewhere; every picture a PNG beside the page."""
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "@import" not in page
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert sources and all((out / s).is_file() and (out / s).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for s in sources)


def test_resume_point_comes_from_the_logger_not_the_first_logged_step(tmp_path: Path) -> None:
    """A resumed fit that logs sparsely (log_every_n_steps) first logs after its checkpoint's step; the logger's
    ``run/resumed`` mark says where it really continued."""
    logged_session(tmp_path, "sparse", range(10), hparams(), end=None)
    run = logged_session(tmp_path, "sparse", range(8, 12), hparams(), purge_step=6)
    _, summary = report.load_runs([run])
    assert summary.loc[0, "resumed at"] == "6"
