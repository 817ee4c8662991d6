"""The one exception type the application raises for bad input.

The CLI catches exactly this type and prints its message without a traceback, so every message must
say what is wrong (the file, key or column) and what to do about it.
"""


class TbxFinetuneError(Exception):
    """Bad input detected before training: a missing column, an unknown label, a model that cannot load."""
