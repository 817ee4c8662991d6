"""The shape of the code, checked by machine: the import layers, and the one wrapper of Lightning's private state."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from common.lightning_state import flat_params, jit_tracing, logging_step, shift_checkpoint_logging_step
from datamodules import TextDataModule
from loggers import TensorBoardXLogger
from modules import TextClassifier

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "modules", "datamodules", "loggers", "common")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the packages under ``root``, with the contract of ``root/pyproject.toml``."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)}
    )


def test_layer_contract_is_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_layer_contract_breaks_on_an_upward_or_sideways_import(tmp_path: Path) -> None:
    """The same contract over a copy of the code with one wrong import each: lint-imports must fail."""
    for wrong_file, wrong_import in (
        ("modules/text.py", "import app.cli"),  # a lower layer importing the top
        ("loggers/health.py", "import modules.classifier"),  # one middle package importing its sibling
        ("common/errors.py", "import loggers.tensorboardx"),  # the shared leaf importing a layer above it
    ):
        copy = tmp_path / wrong_file.replace("/", "_")
        copy.mkdir()
        shutil.copy(REPO / "pyproject.toml", copy)
        for package in PACKAGES:
            shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
        target = copy / wrong_file
        target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
        result = lint_imports(copy)
        assert result.returncode != 0, f"{wrong_import} in {wrong_file} was not caught:\n{result.stdout[-2000:]}"
        assert "BROKEN" in result.stdout


class RecordValidationStep(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.steps.append(logging_step(trainer))


def test_lightning_private_state_is_where_we_read_it(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    """Fails on a Lightning upgrade that moves the logging step: ``logging_step`` must equal the step Lightning
    itself gives ``val/acc``, and a checkpoint must carry the count ``shift_checkpoint_logging_step`` edits."""
    from conftest import load_events

    datamodule = TextDataModule(
        data_files=str(sentiment_csv), text_column="sentence", label_column="sentiment", tokenizer=str(tiny_bert)
    )
    logger = TensorBoardXLogger(save_dir=str(tmp_path / "runs"))
    recorder = RecordValidationStep()
    trainer = Trainer(
        logger=logger, callbacks=[recorder], max_epochs=2, log_every_n_steps=1, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(TextClassifier(str(tiny_bert), num_labels=2), datamodule)
    logged = [e.step for e in load_events(Path(logger.log_dir)).Scalars("val/acc")]
    assert recorder.steps == logged and len(logged) == 2 and logged[0] > 0

    trainer.save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=True)
    counters = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
    before = counters["_batches_that_stepped"]
    assert before == logging_step(trainer)
    shift_checkpoint_logging_step(checkpoint, -1)
    assert counters["_batches_that_stepped"] == before - 1


def test_lightning_private_helpers_still_import_and_behave() -> None:
    with jit_tracing():
        pass
    from jsonargparse.typing import PositiveInt

    typed = flat_params({"batch": PositiveInt(8)})
    assert typed == {"batch": 8} and type(typed["batch"]) is int
    assert flat_params({"model": {"init_args": {"lr": 0.1, "layers": [1, 2]}}, "seed": None}) == {
        "model.init_args.lr": 0.1,
        "model.init_args.layers": "[1, 2]",
        "seed": "None",
    }
