"""LightningModules: a shared classification base and one subclass per model family."""

from modules.classifier import ClassificationModule
from modules.text import TextClassifier

__all__ = ["ClassificationModule", "TextClassifier"]
