"""LightningModules and the callbacks a model brings itself.

``classifier.py`` ClassificationModule: steps, torchmetrics, parameter groups, the injected optimizer and
named schedule. ``text.py`` TextClassifier and ``vision.py`` ImageClassifier: the network of each family and
its Hugging Face export. ``augment.py``: on-device image preprocessing. ``finetuning.py``: StagedUnfreeze.

May import ``common`` and libraries; never ``app``, ``datamodules`` or ``loggers`` (what a module needs from
the data or the record it reads duck-typed: ``datamodule.tokenizer``, ``sample_grid`` for the visuals).
"""

from modules.classifier import ClassificationModule
from modules.text import TextClassifier
from modules.vision import ImageClassifier

__all__ = ["ClassificationModule", "ImageClassifier", "TextClassifier"]
