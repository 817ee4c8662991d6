"""LightningDataModules over the ``datasets`` library: load → validate → split → encode labels → loaders.

``sources.py`` files, ``pkg://`` files and hub datasets; ``splits.py`` train/val/test, label filter and
``ClassLabel`` encoding (any modality); ``base.py`` the loaders and the splits of each stage; ``text.py``
tokenising (cached by ``datasets``); ``vision.py`` and ``image_sources.py`` images decoded to ``uint8``.

May import ``common`` and libraries; never ``app``, ``modules`` or ``loggers``.
"""

from datamodules.text import TextDataModule
from datamodules.vision import ImageDataModule

__all__ = ["ImageDataModule", "TextDataModule"]
