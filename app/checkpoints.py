"""Checkpoints a config names: found (``last``), loaded safely, checked against the model, resumed in place.

``fit --ckpt_path last`` in Lightning means "the last checkpoint of *this* run's checkpoint folder", and this
run's folder is a new ``version_N``: nothing to resume. So the CLI resolves ``last`` itself, to the newest
``runs/<name>/version_<n>/checkpoints/last.ckpt``, and continues that run: same folder, steps continuing from
the checkpoint's global step, and the writer opened with ``purge_step`` so TensorBoard drops the points the
crashed session logged after the checkpoint (one curve, no duplicates).

Every checkpoint is loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, no
pickled code. Checked before Lightning sees it, so a wrong file fails in seconds with the key to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from app.errors import TbxFinetuneError

LAST = "last"
LAST_FILE = "last.ckpt"
LIGHTNING_ALIASES = ("last", "best", "hpc", "registry")
"""Values of ``ckpt_path`` that Lightning resolves itself (``last`` is ours for ``fit``)."""


def find_last_checkpoint(root_dir: str) -> Path | None:
    """The ``version_*/checkpoints/last.ckpt`` under ``root_dir`` written most recently, if any."""
    candidates = [p for p in Path(root_dir).glob(f"*/checkpoints/{LAST_FILE}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)


def run_folder_of(ckpt_path: str | os.PathLike, root_dir: str) -> str | None:
    """The run folder name (``version_3``) when ``ckpt_path`` is ``root_dir/<run>/checkpoints/<file>``."""
    path = Path(ckpt_path).resolve()
    if path.parent.name != "checkpoints" or path.parent.parent.parent != Path(root_dir).resolve():
        return None
    return path.parent.parent.name


def load_checkpoint(ckpt_path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped; every failure names ``key`` and the file."""
    if not os.path.isfile(ckpt_path):
        raise TbxFinetuneError(f"{key}={str(ckpt_path)!r}: no such checkpoint file; fix the path")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # UnpicklingError (code inside), RuntimeError (truncated / not a zip), EOFError
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TbxFinetuneError(
            f"{key}={str(ckpt_path)!r} is not a checkpoint that loads safely (torch.load weights_only=True: "
            f"{first_line}). Use a checkpoint written by this tool; never load files you do not trust"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise TbxFinetuneError(f"{key}={str(ckpt_path)!r} is not a Lightning checkpoint (it has no 'state_dict')")
    return checkpoint


def check_fits_model(checkpoint: dict[str, Any], model: torch.nn.Module, ckpt_path: str) -> None:
    """Raise our error when the checkpoint's weights do not match the model's (names and shapes)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = [
        f"{n}: checkpoint {found[n]} vs model {expected[n]}"
        for n in expected
        if found.get(n, expected[n]) != expected[n]
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with another shape", reshaped)):
        if items:
            problems.append(f"{len(items)} weight(s) {label} (e.g. {items[0]})")
    raise TbxFinetuneError(
        f"ckpt_path={ckpt_path!r} was saved from a different model than the config builds: {'; '.join(problems)}. "
        "Use a checkpoint of this model (model.init_args.model_name_or_path and the data's labels must match)"
    )


def restored_step(checkpoint: dict[str, Any]) -> int:
    """The optimizer step training continues from (Lightning's ``global_step``)."""
    return int(checkpoint.get("global_step", 0))
