"""On-device image preprocessing: ``uint8`` batch → [0, 1] floats → (train only) augmentation → normalisation.

Runs in ``on_after_batch_transfer``, batched on the batch's device, so loader workers only decode images.
Augmentation uses ``kornia.augmentation`` (batched, differentiable, device-agnostic, no torchvision).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn


@dataclass
class Augmentation:
    """Random train-time augmentation; evaluation is always deterministic.

    Args:
        crop_scale: Area range of the random resized crop (output keeps the input size); ``null``: no crop.
        degrees: Rotation range (±) of the random affine transform.
        translate: Shift range as a fraction of width/height.
        hflip: Random horizontal flips (off for digits and text, where a mirror is another symbol).
    """

    crop_scale: tuple[float, float] | None = (0.8, 1.0)
    degrees: float = 10.0
    translate: float = 0.1
    hflip: bool = False


class Preprocess(nn.Module):
    """Scale, adapt channels to the model, augment (training only) and normalise a batch of images."""

    def __init__(
        self, mean: list[float], std: list[float], num_channels: int, augmentation: Augmentation | None
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.augmentation = augmentation
        self.register_buffer("mean", _per_channel(mean, num_channels), persistent=False)
        self.register_buffer("std", _per_channel(std, num_channels), persistent=False)
        self._augmenters: dict[tuple[int, int], K.AugmentationSequential] = {}

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` → float in [0, 1], with as many channels as the model takes (grey ↔ RGB)."""
        images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
        channels = images.shape[1]
        if channels == self.num_channels:
            return images
        if channels == 1:
            return images.expand(-1, self.num_channels, -1, -1)
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)  # ITU-R 601 luma
        return (images * weights).sum(dim=1, keepdim=True)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training or self.augmentation is None:
            return images
        return self._augmenter(images.shape[-2:])(images)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def _augmenter(self, size: torch.Size) -> K.AugmentationSequential:
        key = (int(size[0]), int(size[1]))
        if key not in self._augmenters:
            spec = self.augmentation
            steps = []
            if spec.crop_scale is not None:
                steps.append(K.RandomResizedCrop(key, scale=tuple(spec.crop_scale)))
            if spec.degrees or spec.translate:
                steps.append(K.RandomAffine(degrees=spec.degrees, translate=(spec.translate, spec.translate), p=1.0))
            if spec.hflip:
                steps.append(K.RandomHorizontalFlip())
            self._augmenters[key] = K.AugmentationSequential(*steps, data_keys=["input"])
        return self._augmenters[key]


def _per_channel(values: list[float], channels: int) -> torch.Tensor:
    values = list(values)
    if len(values) == 1:
        values = values * channels
    elif len(values) == 3 and channels == 1:
        values = [sum(values) / 3]
    if len(values) != channels:
        raise ValueError(f"{len(values)} normalisation values for {channels} channels")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile ``(B, C, H, W)`` images in [0, 1] into one ``(C, H', W')`` image (TensorBoard's IMAGES tab)."""
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    cols = min(count, columns)
    grid = images.new_ones(channels, rows * (height + padding) + padding, cols * (width + padding) + padding)
    for i, image in enumerate(images.clamp(0, 1)):
        top, left = padding + (i // columns) * (height + padding), padding + (i % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = image
    return grid
