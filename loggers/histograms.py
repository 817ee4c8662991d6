"""Histograms reduced on the device to a handful of numbers, so logging one costs no per-element host copy.

A histogram is summarised as ``[min, max, count, sum, sum_of_squares, nonfinite, bucket_counts...]`` in one
float tensor. Callers stack several summaries (and any scalars) into one tensor and copy it to the host
once per log step; ``HistogramStats.from_summary`` then unpacks it for ``add_histogram_raw``.

Non-finite values (NaN, ±inf: early fp16 steps, a diverging run) are counted, never binned: one NaN would
otherwise turn min/max/sum into NaN and TensorBoard would drop the whole histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HEADER = 6
"""Numbers before the bucket counts in a summary: min, max, count, sum, sum of squares, non-finite count."""


def summary_size(bins: int) -> int:
    return HEADER + bins


def histogram_summary(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Summarise ``values`` on their device, without a host sync (no ``.item()``, no data-dependent shape)."""
    x = values.detach().flatten().float()
    finite = torch.isfinite(x)
    safe = torch.where(finite, x, torch.zeros_like(x))
    largest = torch.finfo(torch.float32).max
    count = finite.sum().float()
    low = torch.where(finite, x, torch.full_like(x, largest)).amin() if x.numel() else x.new_zeros(())
    high = torch.where(finite, x, torch.full_like(x, -largest)).amax() if x.numel() else x.new_zeros(())
    low = torch.where(count > 0, low, torch.zeros_like(low))
    high = torch.where(count > 0, high, torch.zeros_like(high))
    width = (high - low).clamp_min(torch.finfo(torch.float32).tiny) / bins
    index = ((safe - low) / width).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(bins, device=x.device).index_add_(0, index, finite.float())
    header = torch.stack([low, high, count, safe.sum(), (safe * safe).sum(), (~finite).sum().float()])
    return torch.cat([header, counts])


@dataclass(frozen=True)
class HistogramStats:
    """One histogram on the host, in the shape ``SummaryWriter.add_histogram_raw`` takes."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    nonfinite: int
    bucket_limits: list[float]
    bucket_counts: list[float]

    @classmethod
    def from_summary(cls, summary: list[float]) -> HistogramStats:
        """Unpack a host copy of ``histogram_summary`` (right-closed bucket edges, as TensorBoard expects)."""
        low, high, num, total, squares, nonfinite = summary[:HEADER]
        counts = list(summary[HEADER:])
        width = max(high - low, 0.0) / len(counts)
        limits = [low + width * (i + 1) for i in range(len(counts))]
        limits[-1] = high
        return cls(low, high, int(num), total, squares, int(nonfinite), limits, counts)
