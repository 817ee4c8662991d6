"""Shared leaves every layer may import.

``errors.py`` TbxFinetuneError, the one error type the CLI prints without a traceback; ``assets.py`` the
``pkg://`` locator and ``from_pretrained`` with one clear error; ``lightning_state.py`` the one wrapper of
Lightning's private pieces we use (its test fails on an upgrade that moves them).

Imports no package of this project, only libraries (transformers, Lightning), so ``modules``, ``datamodules``,
``loggers`` and ``app`` can all use it. The layers contract in ``pyproject.toml`` (import-linter) keeps it so.
"""
