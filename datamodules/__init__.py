"""LightningDataModules over the ``datasets`` library."""

from datamodules.text import TextDataModule

__all__ = ["TextDataModule"]
