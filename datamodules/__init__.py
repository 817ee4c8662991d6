"""LightningDataModules over the ``datasets`` library."""

from datamodules.text import TextDataModule
from datamodules.vision import ImageDataModule

__all__ = ["ImageDataModule", "TextDataModule"]
