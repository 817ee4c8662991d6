"""What does it cost to leave gradient-norm monitoring on? Our monitor vs no logging vs the naive recipe.

Why this exists: the gradient monitor (``loggers.gradients.GradNormMonitor``) is meant to stay on in every
run, so its cost per optimizer step must be small, and smaller than what users write today. This script
trains the same model on the same batches for the same number of steps, in one process, with:

(a) ``none``:      no logger, no monitor (``Trainer(logger=False)``);
(b) ``ours@50``:   our ``TensorBoardXLogger`` + ``GradNormMonitor(every_n_steps=50)``;
    ``ours@1``:    the same, every step (per-layer norm scalars + the per-parameter norm histogram);
    ``ours@1+h``:  every step, plus per-layer histograms of gradient and weight values;
(c) ``naive@50`` / ``naive@1``: the recipe from tutorials: Lightning's ``grad_norm`` utility logged with
    ``self.log_dict``, plus ``add_histogram`` of every parameter's gradient through Lightning's stock
    ``TensorBoardLogger`` writer, in ``on_before_optimizer_step``, every 50 steps / every step.

A step's time is the wall time between the starts of consecutive training steps, so everything between
steps counts (the monitor runs in ``on_before_optimizer_step``); the first ``--warmup`` steps are dropped.
Variants alternate within each round so that a noisy machine slows all alike. The headline is the ratio of
the **mean** step time to (a)'s (a median would hide work done every 50 steps), as the median over rounds of
the per-round ratios; the per-round spread is printed too. Because two fits differ by a few percent even
when nothing differs, the time spent inside each monitor's hook (writes included) is also measured directly
and printed as ``hook/step`` = 1 + in-hook time / (a)'s step time.

The model is a locally built BERT (``--size``: ``small`` = 4 layers, hidden 256, the default; ``tiny`` = 2
layers, hidden 32, a worst case where the step itself costs almost nothing), with sentences of ~64 tokens.

    python scripts/bench_logging.py                      # about 14 minutes on 2 CPU cores
    python scripts/bench_logging.py --size tiny --steps 200 --rounds 5
    python scripts/bench_logging.py --accelerator gpu    # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402

SEED = 1234
VARIANTS = ("none", "ours@50", "ours@1", "ours@1+h", "naive@50", "naive@1")
SIZES = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
}


class StepStarts(Callback):
    """``time.perf_counter()`` at the start of every training step (synchronised on GPU)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def time_hook(callback: Callback, spent: list[float]) -> Callback:
    """Record the seconds ``callback.on_before_optimizer_step`` takes at each optimizer step into ``spent``."""
    hook = callback.on_before_optimizer_step

    def timed(trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        start = time.perf_counter()
        hook(trainer, pl_module, optimizer)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        spent.append(time.perf_counter() - start)

    callback.on_before_optimizer_step = timed
    return callback


class NaiveGradientLogging(Callback):
    """What users write today: ``grad_norm`` + ``log_dict``, and ``add_histogram`` per parameter's gradient."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        from lightning.pytorch.utilities import grad_norm

        step = trainer.global_step
        if step % self.every_n_steps:
            return
        pl_module.log_dict(grad_norm(pl_module, norm_type=2))
        writer = trainer.logger.experiment
        for name, param in pl_module.named_parameters():
            if param.grad is not None:
                writer.add_histogram(f"grad/{name}", param.grad, step)


def build_model(folder: Path, size: str) -> Path:
    """A BERT of the chosen size over the tiny test vocabulary, saved like a hub checkpoint."""
    from tiny_assets import NEGATIVE, NEUTRAL, POSITIVE
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=128, **SIZES[size])
    BertModel(config).save_pretrained(folder)
    return folder


def write_corpus(path: Path, rows: int) -> Path:
    """Reviews of ~60 words whose sentiment words decide the label."""
    from tiny_assets import NEGATIVE, NEUTRAL, POSITIVE

    rng = random.Random(SEED)
    lines = ["sentence,sentiment"]
    for i in range(rows):
        label, words = ("pos", POSITIVE) if i % 2 == 0 else ("neg", NEGATIVE)
        lines.append(" ".join(rng.choice(NEUTRAL + words) for _ in range(60)) + f",{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_variant(
    variant: str, model_dir: Path, data_file: Path, args: argparse.Namespace, work: Path
) -> tuple[list[float], list[float]]:
    """One fit of ``args.warmup + args.steps + 1`` steps; returns the timed step durations and the seconds spent
    in the monitor's hook at each of those steps (empty for ``none``)."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger

    from datamodules.text import TextDataModule
    from loggers.gradients import GradNormMonitor
    from loggers.tensorboardx import TensorBoardXLogger
    from modules.text import TextClassifier

    seed_everything(SEED, verbose=False)
    timer = StepStarts()
    callbacks: list[Callback] = [timer]
    in_hook: list[float] = []
    logger: Any = False
    kind, _, every = variant.partition("@")
    if kind == "ours":
        logger = TensorBoardXLogger(save_dir=str(work / "runs"), name=variant)
        histograms = every.endswith("+h")
        monitor = GradNormMonitor(
            every_n_steps=int(every.removesuffix("+h")), gradient_histograms=histograms, weight_histograms=histograms
        )
        callbacks.append(time_hook(monitor, in_hook))
    elif kind == "naive":
        logger = TensorBoardLogger(save_dir=str(work / "runs"), name=variant)
        callbacks.append(time_hook(NaiveGradientLogging(every_n_steps=int(every)), in_hook))
    data = TextDataModule(
        data_files=str(data_file), text_column="sentence", label_column="sentiment", tokenizer=str(model_dir),
        max_length=64, batch_size=args.batch_size, val_fraction=0.01, test_fraction=0.01, seed=SEED,
    )  # fmt: skip
    model = TextClassifier(model_name_or_path=str(model_dir), num_labels=2, learning_rate=5e-5)
    trainer = Trainer(
        accelerator=args.accelerator, devices=1, max_steps=args.warmup + args.steps + 1, limit_val_batches=0,
        num_sanity_val_steps=0, logger=logger, callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    starts = timer.times
    steps = [b - a for a, b in zip(starts, starts[1:], strict=False)][args.warmup :]
    return steps, in_hook[args.warmup : args.warmup + len(steps)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="model size (default small)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per fit (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each fit (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all variants (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu (default cpu)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    if "none" not in args.variants:
        parser.error("--variants must include 'none', the baseline of every ratio")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_logging_") as tmp:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf_datasets")
        import datasets
        import lightning
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        import logging

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

        model_dir = build_model(work / "model", args.size)
        rows = (args.warmup + args.steps + 2) * args.batch_size * 102 // 100 + 8
        data_file = write_corpus(work / "reviews.csv", rows)
        # one discarded fit first: the process's first fit pays for lazy imports, allocator growth and caches
        run_variant("none", model_dir, data_file, args, work)
        means: dict[str, list[float]] = {v: [] for v in args.variants}
        medians: dict[str, list[float]] = {v: [] for v in args.variants}
        hook_means: dict[str, list[float]] = {v: [] for v in args.variants}
        for round_index in range(args.rounds):
            order = args.variants if round_index % 2 == 0 else list(reversed(args.variants))
            for variant in order:
                if args.accelerator == "cpu":
                    torch.set_num_threads(args.threads)
                durations, in_hook = run_variant(variant, model_dir, data_file, args, work)
                hook_means[variant].append(statistics.fmean(in_hook) if in_hook else 0.0)
                means[variant].append(statistics.fmean(durations))
                medians[variant].append(statistics.median(durations))
            print(f"--- round {round_index + 1}/{args.rounds} done", flush=True)

        device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU, {args.threads} threads"
        print()
        print("== gradient logging cost: step time relative to (a) no logger ==")
        print(f"torch {torch.__version__}, lightning {lightning.__version__}, transformers {transformers.__version__}")
        print(
            f"{device}; BERT '{args.size}' {SIZES[args.size]}, batch {args.batch_size} x ~64 tokens, "
            f"{args.steps} timed steps per fit after {args.warmup} warm-up, {args.rounds} rounds, variants alternate"
        )
        base = means["none"]
        baseline = statistics.median(base)
        print(
            f"{'variant':>10}  {'mean ms':>9}  {'median ms':>9}  {'ratio (mean)':>12}  {'in hook ms':>10}  "
            f"{'hook/step':>9}  per-round ratios"
        )
        for variant in args.variants:
            ratios = [m / b for m, b in zip(means[variant], base, strict=True)]
            hook = statistics.median(hook_means[variant])
            print(
                f"{variant:>10}  {statistics.median(means[variant]) * 1e3:9.2f}  "
                f"{statistics.median(medians[variant]) * 1e3:9.2f}  {statistics.median(ratios):12.3f}  "
                f"{hook * 1e3:10.2f}  {1 + hook / baseline:9.3f}  " + " ".join(f"{r:.3f}" for r in ratios)
            )
        print(
            "ratio (mean): mean step time over (a)'s, median over rounds (includes run-to-run noise of a few %);\n"
            "in hook: mean time per step inside the monitor's on_before_optimizer_step, writes included;\n"
            "hook/step: 1 + that over (a)'s step time, the added cost without the noise of comparing two runs"
        )


if __name__ == "__main__":
    main()
