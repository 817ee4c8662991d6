"""The one exception type the application raises for bad input.

The CLI catches exactly this type and prints its message without a traceback, so every message must
say what is wrong (the file, key or column) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator


class TbxFinetuneError(Exception):
    """Bad input detected before training: a missing column, an unknown label, a model that cannot load."""


def causes(err: BaseException | None) -> Iterator[BaseException]:
    """``err``, then what it was raised from (or while handling), down to the root cause: libraries wrap what they
    raise (jsonargparse while instantiating, Lightning while running, ``datasets`` while loading)."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__
