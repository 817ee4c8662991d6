"""Length-grouped training order (HF Trainer's ``group_by_length``), resumable mid-epoch and DDP-ready.

The order itself is transformers' ``DistributedLengthGroupedSampler`` (shuffle with ``seed + epoch``, sort by
length inside mega-batches of 50 batches, each rank takes every ``num_replicas``-th index). It is already a
``DistributedSampler``, so Lightning leaves it alone under DDP: its ``DistributedSamplerWrapper`` would re-shuffle
the positions for training (it is always built with ``shuffle=True`` there) and undo the grouping.

What is added here is what no library gives this sampler: a ``state_dict`` for torchdata's ``StatefulDataLoader``
(the epoch, the seed and how many indices this epoch has handed out), so a run resumed mid-epoch continues the
epoch's own order, on every rank, whatever epoch the sampler was told before the restore.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import pyarrow.compute as pc
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

from common.errors import TbxFinetuneError
from datamodules.base import training_seed


def token_lengths(dataset: datasets.Dataset, column: str = "input_ids") -> list[int]:
    """Each row's number of tokens, read from the Arrow column's offsets (no row is decoded into Python)."""
    return pc.list_value_length(dataset.with_format("arrow")[column]).to_pylist()


class LengthGroupedSampler(DistributedLengthGroupedSampler):
    """Indices in length-grouped order for one rank, stateful for ``StatefulDataLoader``.

    Args:
        lengths: Each example's length in tokens.
        batch_size: The global batch (per-device batch × ranks): mega-batches hold up to 50 of them.
        num_replicas: Number of ranks (1 without DDP).
        rank: This rank.
        seed: Same on every rank; with the epoch it fixes the order. ``None``: ``PL_GLOBAL_SEED`` (what
            ``seed_everything`` sets, and what Lightning seeds its own distributed samplers with), else 0.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int | None = None,
    ) -> None:
        seed = training_seed() if seed is None else seed
        super().__init__(batch_size, num_replicas=num_replicas, rank=rank, seed=seed, lengths=list(lengths))
        self._yielded = 0
        self._restored: tuple[int | None, int] = (None, 0)  # (epoch, indices already handed out) from load_state_dict
        self._epoch_of_iterator = self.epoch

    def __iter__(self) -> Iterator[int]:
        # the restored epoch and position belong to the first iterator made after load_state_dict, and only to it:
        # an epoch restored as finished is followed by a fresh one, in the epoch set_epoch gives, from its start
        (epoch, start), self._restored = self._restored, (None, 0)
        self._yielded = start
        return _Pass(self._indices(epoch, start))

    def _indices(self, epoch: int | None, start: int) -> Iterator[int]:
        # drawn at the first index, not when iter() is called: Lightning calls set_epoch in between
        self._epoch_of_iterator = self.epoch if epoch is None else epoch
        current, self.epoch = self.epoch, self._epoch_of_iterator
        order = list(super().__iter__())
        self.epoch = current
        self._yielded = start
        for index in order[start:]:
            self._yielded += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch_of_iterator, "seed": self.seed, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._restored = (int(state["epoch"]), int(state["yielded"]))


class LengthSortedSampler(Sampler[int]):
    """Evaluation order: longest first, so each batch pads little (and a batch too large for memory fails at once).

    Not random and not resumable on purpose: an evaluation is redone whole after a resume. Under DDP Lightning puts
    it in its ``DistributedSamplerWrapper`` (no shuffle outside training), whose ranks take every other index.
    """

    def __init__(self, lengths: Sequence[int]) -> None:
        self.order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class _Pass(Iterator[int]):
    """One pass over the order. Stateful only to refuse, in words, a loader position saved by a plain shuffle (a
    checkpoint from before ``group_by_length``, or with it off): torchdata would otherwise fail on an assertion."""

    def __init__(self, indices: Iterator[int]) -> None:
        self._indices = indices

    def __next__(self) -> int:
        return next(self._indices)

    def state_dict(self) -> dict[str, Any]:
        return {"length_grouped": True}  # the position itself is in the sampler's state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state.get("length_grouped"):
            raise TbxFinetuneError(
                "the checkpoint's train loader position was saved with a plain shuffle, not length-grouped batches: "
                "resume it with --data.init_args.group_by_length false"
            )
