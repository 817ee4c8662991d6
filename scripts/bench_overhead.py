"""How much slower is a training step through our stack than through a bare PyTorch loop?

Why this exists: everything we add around the model (LightningCLI, ``ClassificationModule``'s metrics and
``self.log`` calls, AdamW with two parameter groups and a warmup schedule, the LR monitor, the rich progress
bar, our ``TensorBoardXLogger``) runs on every step. This script puts a number on that cost, so a change to
the stack can be checked for a per-step slowdown.

What it compares, on the same tiny 2-layer BERT (``tests/tiny_assets.build_tiny_bert``), the same batches
(both take them from our ``TextDataModule``'s train loader, shuffled with the same seed) and the same number
of steps, in one process, under the same ``torch.set_num_threads``:

(a) bare: ``AutoModelForSequenceClassification.from_pretrained`` + ``torch.optim.AdamW`` + cross-entropy in
    a plain ``for batch in loader`` loop;
(b) ours: ``app.cli.main(["fit", ...])`` in-process with its defaults (our logger writing to a temp dir,
    ``log_every_n_steps`` 10, LR monitor, rich progress bar, ``val/acc`` checkpoint, config saving).

A step's time is the wall time between the starts of two consecutive steps (in (b): a Callback's
``on_train_batch_start``), so everything done between steps counts: fetching and collating the batch,
forward/backward/optimizer, and in (b) metrics, logging and the progress bar. The first ``--warmup`` steps
of every run are dropped. Validation and checkpointing run once, after the last timed step (the training
epoch is cut with ``limit_train_batches``), and are therefore not timed; neither is start-up (parsing,
model loading, the sanity check). The two variants alternate, (a), (b), (a), (b), …, so that a noisy machine
slows both alike.

How to read it: ``overhead ratio (ours/bare)`` is the median step time of (b) over that of (a). 1.00 means
our stack costs nothing per step. The model is tiny on purpose, so the ratio is a worst case: the extra
milliseconds per step (also printed) are roughly fixed, and shrink relative to a real model's step time.
The median ignores work done only every ``log_every_n_steps`` steps (writing to the logger); the mean columns
include it (and more of the machine's noise). Per-round ratios show how noisy the machine was; a spread wider
than the effect you look for means: run more rounds. The rich progress bar draws only when stdout is a
terminal, so (b) costs more in a terminal than with output redirected; the output says which it was.
Threads default to 1: on a busy 2-core machine, two intra-op threads make this tiny model's steps swing by
an order of magnitude, which would drown the overhead being measured.

    python scripts/bench_overhead.py                # defaults take well under two minutes on 2 CPU cores
    python scripts/bench_overhead.py --rounds 10 --steps 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# below the environment above: importing lightning imports transformers and huggingface_hub, which read it
import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

SEED = 1234
LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01
MAX_LENGTH = 64
VAL_ROWS = 64
INCLUDED_IN_OURS = (
    "between timed steps in (b): batch fetch+collate, forward/backward, AdamW (2 groups) + LR schedule, "
    "torchmetrics update, self.log, LearningRateMonitor, TensorBoardXLogger (every N steps), RichProgressBar, "
    "Lightning loop hooks"
)
NOT_TIMED = (
    "not timed (either variant): start-up (CLI parse, model load, sanity-check val), end-of-epoch validation, "
    "checkpoint save (ModelCheckpoint on val/acc + last.ckpt), logger finalize"
)


def batch_fingerprint(batch: Any) -> int:
    """A checksum of a batch's token ids and labels, to check that both variants saw the same data."""
    ids = batch["input_ids"].contiguous().numpy().tobytes()
    labels = batch["labels"].contiguous().numpy().tobytes()
    return zlib.crc32(labels, zlib.crc32(ids))


class StepTimer(Callback):
    """Records ``time.perf_counter()`` at each training step's start; writes times and batch checksums as JSON.

    Args:
        output: JSON file written when training ends.
        seed: Torch seed set in ``setup``, so the train loader shuffles as in the bare loop.
    """

    def __init__(self, output: str, seed: int = SEED) -> None:
        super().__init__()
        self.output = output
        self.seed = seed
        self.times: list[float] = []
        self.batches: list[Any] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning first iterates the train loader inside configure_optimizers (estimated_stepping_batches),
        # which comes after this hook; the loader's RandomSampler draws its seed from torch's RNG at that point
        torch.manual_seed(self.seed)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.times.append(time.perf_counter())
        self.batches.append(batch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {
            "times": self.times,
            "fingerprints": [batch_fingerprint(b) for b in self.batches],
            "threads": torch.get_num_threads(),
        }
        Path(self.output).write_text(json.dumps(record), encoding="utf-8")
        self.batches = []


def class_path(cls: type) -> str:
    """An import path jsonargparse can resolve for ``cls``, also when this file runs under ``python -m cProfile``."""
    module = sys.modules.get(cls.__module__)
    if getattr(module, cls.__qualname__, None) is cls:
        return f"{cls.__module__}.{cls.__qualname__}"
    alias = types.ModuleType("_bench_overhead_callbacks")
    setattr(alias, cls.__qualname__, cls)
    sys.modules[alias.__name__] = alias
    return f"{alias.__name__}.{cls.__qualname__}"


def intervals(times: Sequence[float], warmup: int) -> list[float]:
    """Seconds between consecutive step starts, the first ``warmup`` dropped."""
    return [b - a for a, b in zip(times, times[1:], strict=False)][warmup:]


def run_bare(model_dir: Path, loader: DataLoader, num_labels: int, total_batches: int) -> tuple[list[float], list[int]]:
    """(a): fresh model and optimizer, ``total_batches`` plain steps; returns step-start times and checksums."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=num_labels, ignore_mismatched_sizes=True
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    times: list[float] = []
    batches: list[Any] = []
    torch.manual_seed(SEED)  # same sampler seed as StepTimer.setup sets in (b)
    for step, batch in enumerate(loader):
        if step == total_batches:
            break
        times.append(time.perf_counter())
        batches.append(batch)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return times, [batch_fingerprint(b) for b in batches]


def run_ours(cli_args: list[str], timer_output: Path) -> tuple[list[float], list[int], int]:
    """(b): ``app.cli.main(cli_args)`` in-process; returns step-start times, batch checksums and torch threads."""
    from app.cli import main as cli_main

    timer_output.unlink(missing_ok=True)
    argv = sys.argv
    sys.argv = argv[:1]  # LightningCLI warns when it gets args while sys.argv holds this script's own flags
    try:
        cli_main(cli_args)
    finally:
        sys.argv = argv
    record = json.loads(timer_output.read_text(encoding="utf-8"))
    return record["times"], record["fingerprints"], record["threads"]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def print_table(rows: Iterable[tuple[str, ...]]) -> None:
    widths = (5, 12, 12, 7, 12, 12, 7)
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run, after warm-up (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating (a),(b) pairs (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--warmup", type=int, default=10, help="steps dropped at the start of each run (default 10)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for both variants (default 1: the tiny model gains nothing from more, and "
        "intra-op threads on a busy 2-core machine make step times swing by 10x)",
    )
    parser.add_argument("--log-every-n-steps", type=int, default=10, help="trainer.log_every_n_steps (default 10)")
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "batch_size", "threads", "log_every_n_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    threads = args.threads
    # warmup + steps intervals need one more step start than that
    total_batches = args.warmup + args.steps + 1

    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf_datasets")  # read when datasets is first imported

        import datasets
        import lightning
        import transformers
        from tiny_assets import build_tiny_bert, write_sentiment_csv

        from datamodules.text import TextDataModule

        transformers.logging.set_verbosity_error()  # "newly initialized classifier weights" on every load
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars
        datasets.disable_progress_bars()

        model_dir = build_tiny_bert(work / "tiny-bert")
        data_args: dict[str, Any] = {
            "data_files": {
                "train": str(write_sentiment_csv(work / "data" / "train.csv", total_batches * args.batch_size, 0)),
                "val": str(write_sentiment_csv(work / "data" / "val.csv", VAL_ROWS, 1)),
                "test": str(write_sentiment_csv(work / "data" / "test.csv", VAL_ROWS, 2)),
            },
            "text_column": "sentence",
            "label_column": "sentiment",
            "max_length": MAX_LENGTH,
            "batch_size": args.batch_size,
            "seed": SEED,
        }

        # (a) takes its loader from our datamodule, built as the CLI builds it (tokenizer = the model folder)
        datamodule = TextDataModule(**data_args, tokenizer=str(model_dir))
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        num_labels = datamodule.num_labels

        timer_output = work / "step_times.json"
        config = {
            "seed_everything": SEED,
            "model": {
                "class_path": "modules.TextClassifier",
                "init_args": {
                    "model_name_or_path": str(model_dir),
                    "learning_rate": LEARNING_RATE,
                    "weight_decay": WEIGHT_DECAY,
                },
            },
            "data": {"class_path": "datamodules.TextDataModule", "init_args": data_args},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_epochs": 1,
                "limit_train_batches": total_batches,
                "log_every_n_steps": args.log_every_n_steps,
                "default_root_dir": str(work / "runs"),
                "callbacks": [
                    {
                        "class_path": class_path(StepTimer),
                        "init_args": {"output": str(timer_output), "seed": SEED},
                    }
                ],
            },
        }
        config_path = work / "fit.yaml"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
        # the CLI's default logger (TensorBoardXLogger) stays; only its save_dir moves into the temp dir
        cli_args = ["fit", "--config", str(config_path), "--trainer.logger.init_args.save_dir", str(work / "runs")]

        bare_runs: list[list[float]] = []
        ours_runs: list[list[float]] = []
        same_batches = True
        ours_threads: set[int] = set()
        for round_index in range(args.rounds):
            torch.set_num_threads(threads)
            times_a, prints_a = run_bare(model_dir, loader, num_labels, total_batches)
            torch.set_num_threads(threads)
            print(f"--- round {round_index + 1}/{args.rounds}: (a) done, (b) fit through app.cli.main", flush=True)
            times_b, prints_b, threads_b = run_ours(cli_args, timer_output)
            ours_threads.add(threads_b)
            if len(times_a) != total_batches or len(times_b) != total_batches:
                raise SystemExit(f"expected {total_batches} steps per run, got bare={len(times_a)} ours={len(times_b)}")
            same_batches &= prints_a == prints_b
            bare_runs.append(intervals(times_a, args.warmup))
            ours_runs.append(intervals(times_b, args.warmup))

        versions = (
            f"torch {torch.__version__}, lightning {lightning.__version__}, transformers {transformers.__version__}"
        )
        print()
        print("== step-time overhead: (b) our fit via app.cli.main vs (a) bare PyTorch loop ==")
        print(f"{versions}; torch threads: (a) {threads}, (b) {sorted(ours_threads)}")
        print(
            f"tiny BERT (2 layers, hidden 32), batch {args.batch_size}, {args.steps} timed steps per run after "
            f"{args.warmup} warm-up, {args.rounds} rounds alternating (a),(b); "
            f"log_every_n_steps={args.log_every_n_steps}"
        )
        print(f"identical batches in (a) and (b): {'yes' if same_batches else 'NO (order or content differed)'}")
        print(f"stdout is a terminal (rich progress bar draws): {'yes' if sys.stdout.isatty() else 'no'}")
        print(INCLUDED_IN_OURS)
        print(NOT_TIMED)
        print()
        report(bare_runs, ours_runs, args.log_every_n_steps)


def report(bare_runs: list[list[float]], ours_runs: list[list[float]], log_every_n_steps: int) -> None:
    """Per-round and pooled medians (the headline) and means (which include the every-N-steps logging)."""
    rows = [("round", "bare median", "ours median", "ratio", "bare mean", "ours mean", "ratio")]
    median_ratios = []
    for index, (bare, ours) in enumerate(zip(bare_runs, ours_runs, strict=True)):
        (bare_med, ours_med), (bare_avg, ours_avg) = medians_and_means(bare, ours)
        median_ratios.append(ours_med / bare_med)
        rows.append(ratio_row(str(index + 1), bare_med, ours_med, bare_avg, ours_avg))
    bare_all = [t for run in bare_runs for t in run]
    ours_all = [t for run in ours_runs for t in run]
    (bare_med, ours_med), (bare_avg, ours_avg) = medians_and_means(bare_all, ours_all)
    rows.append(ratio_row("all", bare_med, ours_med, bare_avg, ours_avg))
    print("step time in ms; 'all' pools every timed step of every round")
    print_table(rows)
    print()
    print(
        f"extra time per step (ours - bare): median {(ours_med - bare_med) * 1e3:.2f} ms, "
        f"mean {(ours_avg - bare_avg) * 1e3:.2f} ms"
    )
    print(
        f"(the median leaves out what happens only every {log_every_n_steps} steps, e.g. writing to the logger; "
        "the mean includes it, and noise)"
    )
    print(f"per-round median ratio range: {min(median_ratios):.3f} .. {max(median_ratios):.3f}")
    print(f"overhead ratio (ours/bare): {ours_med / bare_med:.3f}")


def medians_and_means(bare: list[float], ours: list[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    return (statistics.median(bare), statistics.median(ours)), (statistics.fmean(bare), statistics.fmean(ours))


def ratio_row(label: str, bare_med: float, ours_med: float, bare_avg: float, ours_avg: float) -> tuple[str, ...]:
    return (
        label,
        ms(bare_med),
        ms(ours_med),
        f"{ours_med / bare_med:.3f}",
        ms(bare_avg),
        ms(ours_avg),
        f"{ours_avg / bare_avg:.3f}",
    )


if __name__ == "__main__":
    main()
