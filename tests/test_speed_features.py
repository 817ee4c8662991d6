"""Issue 13's speed features: length-grouped batches (resumable, DDP-sharded), padding buckets, fused AdamW,
``torch.compile`` without recompiles, the ``datasets`` cache, and the gradient monitor's deferred host copy."""

from __future__ import annotations

import csv
import logging
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import load_events, run_cli, start_cli
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from test_fault_tolerance import batches
from test_fault_tolerance import config as fault_config
from test_gradients import fit_tiny
from test_resume import wait_for
from tiny_assets import NEGATIVE, NEUTRAL, POSITIVE, build_tiny_bert, write_sentiment_csv
from torch.utils.data import DistributedSampler

from common.errors import TbxFinetuneError
from datamodules import TextDataModule
from datamodules.length_grouped import LengthGroupedSampler
from loggers.gradients import GradNormMonitor
from modules import TextClassifier
from modules.classifier import decay_groups, rebuilt_fused, wants_fused_adamw
from modules.text import pad_to_bucket

BATCH = 4


@pytest.fixture(scope="module")
def ragged_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 learnable sentences of 3 to 30 words: lengths spread wide, so grouping has something to group."""
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("ragged") / "ragged.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["sentence", "sentiment"])
        for i in range(200):
            label = ("pos", "neg")[i % 2]
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(1, 28))] + rng.sample(
                POSITIVE if label == "pos" else NEGATIVE, 2
            )
            rng.shuffle(words)
            out.writerow([" ".join(words), label])
    return path


def ragged_datamodule(csv_path: Path, tokenizer: Path, world: tuple[int, int] = (1, 0), **kwargs) -> TextDataModule:
    args = {"text_column": "sentence", "label_column": "sentiment", "batch_size": BATCH, "max_length": 64}
    args |= {"group_by_length": True, **kwargs}
    files = {split: str(csv_path) for split in ("train", "validation", "test")}  # all 200 rows in train
    dm = TextDataModule(data_files=files, tokenizer=str(tokenizer), **args)
    dm.trainer = SimpleNamespace(world_size=world[0], global_rank=world[1], accelerator=CPUAccelerator())
    dm.setup("fit")
    return dm


def example_ids(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """Each example of a batch as its unpadded token ids (the sentences are distinct)."""
    return [
        tuple(t for t, keep in zip(ids, mask, strict=True) if keep)
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True)
    ]


def epoch_of(loader, epoch: int) -> list[list[tuple[int, ...]]]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
    return [example_ids(batch) for batch in loader]


# ------------------------------------------------------------------------------------ length-grouped batches
def test_grouped_batches_pad_less_and_change_every_epoch(ragged_csv: Path, tiny_bert: Path) -> None:
    grouped = ragged_datamodule(ragged_csv, tiny_bert, pad_to_multiple_of=None)
    plain = ragged_datamodule(ragged_csv, tiny_bert, pad_to_multiple_of=None, group_by_length=False)
    loader = grouped.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)

    def padded_tokens(loader) -> int:
        return sum(b["input_ids"].numel() - int(b["attention_mask"].sum()) for b in loader)

    assert padded_tokens(loader) * 3 < padded_tokens(plain.train_dataloader())
    first, second = epoch_of(loader, 0), epoch_of(loader, 1)
    assert first != second  # a new order every epoch
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(set(sum(first, [])))  # all, once each
    again = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    assert epoch_of(again, 1) == second  # the seed and epoch fix the order


def test_grouped_epoch_resumed_mid_way_sees_every_example_once(ragged_csv: Path, tiny_bert: Path) -> None:
    whole = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    expected = epoch_of(whole, 1)

    cut = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    cut.sampler.set_epoch(1)
    seen, iterator = [], iter(cut)
    for _ in range(7):
        seen.append(example_ids(next(iterator)))
    state = cut.state_dict()  # what Lightning puts into the checkpoint

    resumed = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()  # a new process: epoch 0 until told
    resumed.load_state_dict(state)
    seen += [example_ids(batch) for batch in resumed]  # the epoch is restored with the position
    assert seen == expected
    resumed.sampler.set_epoch(2)
    assert sorted(sum(epoch_of(resumed, 2), [])) == sorted(sum(expected, []))  # the next epoch is whole


def test_grouped_epoch_restored_as_finished_starts_the_next_one_whole(ragged_csv: Path, tiny_bert: Path) -> None:
    loader = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    epoch_of(loader, 0)
    state = loader.state_dict()
    resumed = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    resumed.load_state_dict(state)  # a finished epoch: the loader's next pass is a new one, from its start
    assert epoch_of(resumed, 1) == epoch_of(ragged_datamodule(ragged_csv, tiny_bert).train_dataloader(), 1)


def test_run_stopped_mid_epoch_resumes_its_grouped_order(tmp_path: Path, tiny_bert: Path, ragged_csv: Path) -> None:
    """The CLI end to end, on texts of 3 to 30 words: SIGTERM in the middle of the second epoch, then
    ``--ckpt_path last``: the resumed epoch goes on in its own grouped order, every example once."""
    grouped = ("--data.init_args.group_by_length", "true")
    whole = run_cli("fit", "--config", str(fault_config(tmp_path, tiny_bert, ragged_csv, "whole")), *grouped)
    assert whole.returncode == 0, whole.stderr[-3000:]
    log = tmp_path / "cut.log"
    process = start_cli(
        "fit", "--config", str(fault_config(tmp_path, tiny_bert, ragged_csv, "cut", ("train", 9))), *grouped, log=log
    )
    wait_for(lambda: (tmp_path / "paused").exists(), process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    resumed = run_cli(
        "fit", "--config", str(fault_config(tmp_path, tiny_bert, ragged_csv, "cut")), *grouped, "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, seen = batches(tmp_path / "whole.batches"), batches(tmp_path / "cut.batches")
    assert [line.split()[0] for line in expected] == ["0"] * 6 + ["1"] * 6  # 2 epochs of 6 batches
    assert seen == expected  # the stop came after step 9's batch: nothing is seen twice, nothing skipped
    assert len(set(expected[6:])) == 6 and expected[6:] != expected[:6]


def test_a_plain_shuffle_position_is_refused_in_words(ragged_csv: Path, tiny_bert: Path) -> None:
    plain = ragged_datamodule(ragged_csv, tiny_bert, group_by_length=False).train_dataloader()
    iterator = iter(plain)
    next(iterator)
    grouped = ragged_datamodule(ragged_csv, tiny_bert).train_dataloader()
    grouped.load_state_dict(plain.state_dict())  # a checkpoint from before group_by_length, resumed with it on
    with pytest.raises(TbxFinetuneError, match="group_by_length false"):
        iter(grouped)


def test_grouped_sampler_shards_disjoint_ranks_that_cover_the_data(ragged_csv: Path, tiny_bert: Path) -> None:
    ranks = [ragged_datamodule(ragged_csv, tiny_bert, world=(2, rank)).train_dataloader() for rank in (0, 1)]
    # a DistributedSampler already: Lightning's DistributedSamplerWrapper (which re-shuffles) is not put around it
    assert all(isinstance(loader.sampler, DistributedSampler) for loader in ranks)
    for epoch in (0, 1):
        shards = [[i for i in (loader.sampler.set_epoch(epoch) or loader.sampler)] for loader in ranks]
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(len(ranks[0].dataset)))  # 200 rows, even split
        lengths = ranks[0].sampler.lengths
        # each rank's batches stay grouped: a batch spans a few tokens, not the 3-30 word range
        for shard in shards:
            spans = [
                max(lengths[i] for i in shard[b : b + BATCH]) - min(lengths[i] for i in shard[b : b + BATCH])
                for b in range(0, len(shard), BATCH)
            ]
            assert sorted(spans)[len(spans) // 2] <= 3


def test_eval_sorted_longest_first_covers_the_split_once_on_each_rank(ragged_csv: Path, tiny_bert: Path) -> None:
    sorted_dm = ragged_datamodule(ragged_csv, tiny_bert, sort_eval_by_length=True, pad_to_multiple_of=None)
    plain = ragged_datamodule(ragged_csv, tiny_bert, pad_to_multiple_of=None)
    assert plain.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"  # off by default
    loader = sorted_dm.val_dataloader()
    widths = [batch["input_ids"].shape[1] for batch in loader]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert sorted(sum(map(example_ids, loader), [])) == sorted(sum(map(example_ids, plain.val_dataloader()), []))
    # under DDP Lightning wraps it for val/test, without shuffling: disjoint ranks covering the split
    ranks = [
        list(DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=False)) for rank in (0, 1)
    ]
    assert set(ranks[0]).isdisjoint(ranks[1]) and sorted(ranks[0] + ranks[1]) == list(range(len(loader.dataset)))


def test_grouped_sampler_state_resumes_each_rank(ragged_csv: Path, tiny_bert: Path) -> None:
    lengths = [len(s.split()) for s in ragged_datamodule(ragged_csv, tiny_bert)._splits["train"]["sentence"]]
    for rank in (0, 1):
        sampler = LengthGroupedSampler(lengths, 2 * BATCH, num_replicas=2, rank=rank, seed=5)
        sampler.set_epoch(3)
        whole = list(sampler)
        iterator = iter(sampler)
        head = [next(iterator) for _ in range(13)]
        restored = LengthGroupedSampler(lengths, 2 * BATCH, num_replicas=2, rank=rank)  # other seed, epoch 0
        restored.load_state_dict(sampler.state_dict())
        assert head + list(restored) == whole


# ------------------------------------------------------------------------------------------------ fused AdamW
def test_fused_adamw_is_chosen_only_for_a_default_adamw_on_cuda() -> None:
    params = [torch.zeros(2, requires_grad=True)]
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert wants_fused_adamw(torch.optim.AdamW(params), cuda)
    assert not wants_fused_adamw(torch.optim.AdamW(params), cpu)
    assert not wants_fused_adamw(torch.optim.AdamW(params, foreach=True), cuda)  # the user's choice stays
    assert not wants_fused_adamw(torch.optim.AdamW(params, fused=False), cuda)
    assert not wants_fused_adamw(torch.optim.Adam(params), cuda)  # only the class asked for
    assert not wants_fused_adamw(torch.optim.SGD(params, lr=0.1), cuda)


def test_fused_adamw_trains_as_the_default_one(tiny_bert: Path, sentiment_csv: Path) -> None:
    dm = TextDataModule(
        data_files=str(sentiment_csv), text_column="sentence", label_column="sentiment", tokenizer=str(tiny_bert)
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))

    def losses(fuse: bool) -> tuple[list[float], torch.optim.Optimizer]:
        torch.manual_seed(0)
        module = TextClassifier(str(tiny_bert), num_labels=2, learning_rate=1e-3)
        module.model.eval()  # no dropout: the two runs see the same function
        optimizer = torch.optim.AdamW(decay_groups(module, weight_decay=0.01), lr=1e-3, foreach=not fuse)
        if fuse:
            optimizer = rebuilt_fused(torch.optim.AdamW(decay_groups(module, weight_decay=0.01), lr=1e-3))
        curve = []
        for _ in range(8):
            loss = torch.nn.functional.cross_entropy(module(batch), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        return curve, optimizer

    fused, fused_optimizer = losses(fuse=True)
    default, _ = losses(fuse=False)
    assert all(group["fused"] for group in fused_optimizer.param_groups)
    assert [g["name"] for g in fused_optimizer.param_groups] == ["decay", "no_decay"]  # the groups survive
    assert fused_optimizer.param_groups[1]["weight_decay"] == 0.0
    assert fused[-1] < fused[0]  # it learns
    assert fused == pytest.approx(default, rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------------ gradient monitor: deferred host copy
class WriteSteps(Callback):
    """Wraps the logger's ``log_metrics`` to note, for each ``grad_norm/total`` point, the optimizer step (or
    ``"end"``, after training) at which it was written."""

    def __init__(self) -> None:
        self.written: dict[int, int | str] = {}
        self.at: int | str = -1

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        logger, original = trainer.logger, trainer.logger.log_metrics

        def log_metrics(metrics, step=None):
            if "grad_norm/total" in metrics:
                self.written[step] = self.at
            return original(metrics, step=step)

        logger.log_metrics = log_metrics

    def on_train_batch_start(self, trainer: Trainer, *args) -> None:
        self.at = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module) -> None:
        self.at = "end"  # runs before the monitor's on_train_end: the monitor is registered after this callback


def test_deferred_gradient_stats_land_at_their_own_steps(tmp_path, tiny_bert, sentiment_csv) -> None:
    runs = {}
    for deferred in (False, True):  # forced on the CPU: the deferral runs as on CUDA, without the event
        torch.manual_seed(3)
        spy = WriteSteps()
        monitor = GradNormMonitor(every_n_steps=2, deferred_copy=deferred)
        logger = fit_tiny(tmp_path / str(deferred), tiny_bert, sentiment_csv, [spy, monitor], max_steps=5)
        runs[deferred] = (spy.written, load_events(Path(logger.log_dir)))
    totals = {mode: {e.step: e.value for e in events.Scalars("grad_norm/total")} for mode, (_, events) in runs.items()}
    sums = {
        mode: {h.step: h.histogram_value.sum for h in events.Histograms("grad_norm/per_param")}
        for mode, (_, events) in runs.items()
    }
    assert sorted(totals[True]) == [0, 2, 4]  # the last one (step 4, the run's last step) too
    assert totals[True] == pytest.approx(totals[False], rel=1e-6)  # the same numbers at the same steps
    assert sums[True] == pytest.approx(sums[False], rel=1e-6)
    assert runs[False][0] == {0: 0, 2: 2, 4: 4}  # written at their own step
    assert runs[True][0] == {0: 1, 2: 3, 4: "end"}  # a step later, the last one at the end of training


# ----------------------------------------------------------------------------------------------- torch.compile
COMPILES: list[tuple[int, ...]] = []


@torch._dynamo.register_backend(name="counting_aot_eager")
def counting_aot_eager(graph_module, example_inputs):
    """aot_eager (compiles forward and backward without generating code: seconds on a CPU, where inductor takes
    minutes for the first shape), counting each compiled graph with its input ids' shape."""
    COMPILES.append(tuple(example_inputs[0].shape))
    return torch._dynamo.lookup_backend("aot_eager")(graph_module, example_inputs)


class Shapes(Callback):
    """Every step's loss, and the (training?, batch, length bucket) of each batch the network sees."""

    def __init__(self, bucket: int) -> None:
        self.bucket, self.losses, self.shapes = bucket, [], set()

    def _note(self, training: bool, batch) -> None:
        rows, length = batch["input_ids"].shape
        self.shapes.add((training, rows, -(-length // self.bucket) * self.bucket))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._note(True, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._note(False, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


def test_pad_to_bucket_keeps_the_logits(tiny_bert: Path) -> None:
    module = TextClassifier(str(tiny_bert), num_labels=2).eval()
    ids = torch.randint(5, 30, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    padded = pad_to_bucket(batch, 16, pad_token_id=0)
    assert {tuple(t.shape) for t in padded.values()} == {(3, 16)}
    assert padded["attention_mask"][:, 11:].sum() == 0 and padded["input_ids"][:, 11:].sum() == 0
    assert pad_to_bucket(padded, 16, 0) is padded  # already a multiple: untouched
    with torch.no_grad():
        assert torch.allclose(module(padded), module(batch), atol=1e-5)


def test_compiled_network_trains_as_eager_with_one_compile_per_bucket(tmp_path, ragged_csv, monkeypatch) -> None:
    model = build_tiny_bert(tmp_path / "no_dropout", dropout=0.0)  # dropout draws would differ between the two
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # the grouped order's seed, whatever an earlier test seeded
    runs = {}
    for compile_on in (False, True):
        torch.manual_seed(0)
        COMPILES.clear()
        shapes = Shapes(bucket=16)
        dm = TextDataModule(
            data_files={split: str(ragged_csv) for split in ("train", "validation", "test")},
            text_column="sentence",
            label_column="sentiment",
            tokenizer=str(model),
            batch_size=BATCH,
            group_by_length=True,
        )
        extra = {"compile": True, "compile_backend": "counting_aot_eager", "compile_bucket": 16} if compile_on else {}
        module = TextClassifier(str(model), num_labels=2, learning_rate=1e-3, **extra)
        options = {"limit_train_batches": 12, "limit_val_batches": 3, "enable_checkpointing": False}
        Trainer(max_epochs=2, logger=False, callbacks=[shapes], enable_progress_bar=False, **options).fit(module, dm)
        runs[compile_on] = shapes
    compiled, eager = runs[True], runs[False]
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-5)  # 24 steps, the same curve
    assert len(eager.losses) == 24 and eager.losses[-1] < eager.losses[0]
    # one compile per (mode, batch size, bucket) the network met, none again: no recompile storm
    assert 0 < len(COMPILES) <= len(compiled.shapes) <= 2 * 2 * 2  # train/eval x 4/8 rows x 16/32 tokens
    assert {shape[1] for shape in COMPILES} <= {16, 32}
    assert module.model._compiled_call_impl is not None


# ------------------------------------------------------------------------------------------------- data pipeline
def test_a_second_run_reads_the_tokenised_splits_from_the_cache(tmp_path, tiny_bert, caplog) -> None:
    corpus = write_sentiment_csv(tmp_path / "fresh.csv", rows=60, seed=11)  # never tokenised before
    first = TextDataModule(
        data_files=str(corpus), text_column="sentence", label_column="sentiment", tokenizer=str(tiny_bert)
    )
    first.prepare_data()
    again = TextDataModule(
        data_files=str(corpus), text_column="sentence", label_column="sentiment", tokenizer=str(tiny_bert)
    )
    with caplog.at_level(logging.INFO, logger="datasets"):
        again.prepare_data()  # another process would build this same datamodule from the same config
        again.setup("fit")
    cached = [r.getMessage() for r in caplog.records if "Loading cached processed dataset" in r.getMessage()]
    assert len(cached) >= 3  # train, val and test: none tokenised again
    assert again.tokenized["train"].cache_files == first._tokenize(first._splits["train"]).cache_files


def test_loaders_pin_memory_only_for_cuda(ragged_csv: Path, tiny_bert: Path) -> None:
    dm = ragged_datamodule(ragged_csv, tiny_bert)
    assert not dm.train_dataloader().pin_memory
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, accelerator=CUDAAccelerator())
    assert dm.train_dataloader().pin_memory and dm.val_dataloader().pin_memory
