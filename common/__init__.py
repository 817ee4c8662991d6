"""Shared leaves every layer may import: the user-facing error type and the ``pkg://`` / pretrained locator.

Imports nothing of this project (only the standard library and transformers), so ``modules``, ``datamodules``,
``loggers`` and ``app`` can all use it without importing each other. The layers contract in ``pyproject.toml``
(import-linter) keeps it that way.
"""
