"""LightningModules: a shared classification base and one subclass per model family."""

from modules.classifier import ClassificationModule
from modules.text import TextClassifier
from modules.vision import ImageClassifier

__all__ = ["ClassificationModule", "ImageClassifier", "TextClassifier"]
