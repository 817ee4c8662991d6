"""What the console shows during a run: Lightning's progress bar, model summary and metrics tables, without
what a user cannot act on (product tips, other libraries' deprecation notices, a column of zero FLOPs).

Everything here is process-wide and set by the entry point (``app.cli.main``), never on import of a package.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count

NOISE = (
    "💡 Tip:",  # Lightning advertising its cloud products, on every run
    "Trainer already configured with model summary callbacks",  # ours replaces the default one
    "Loading `train_dataloader` to estimate number of stepping batches",  # the LR schedule's length, asked each run
)
"""Starts of Lightning info lines dropped from the console."""


def quiet_known_noise() -> None:
    """Settings of the application process, made by its entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fast tokenizers warn in forked loader workers
    # Image preprocessing lives in the model on purpose (normalisation is the checkpoint's); Lightning warns
    # whenever a module overrides this hook and a datamodule is passed, though it then uses the module's.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata's StatefulDataLoader
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")  # Lightning's use
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith(NOISE))


class ModelSummaryTable(RichModelSummary):
    """Lightning's rich model summary without its FLOPs column and total: they count a forward pass of the module's
    ``example_input_array``, which ours leave unset (one fixed example would count a length no batch has), so
    Lightning prints a column of zeros. Hand-written because Lightning's ``summarize`` always adds them."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name.startswith(("Params", "In sizes", "Out sizes")) else "left")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        grid = Table.grid(expand=True)
        grid.add_column()
        frozen = total_parameters - trainable_parameters
        grid.add_row(f"[bold]Trainable params[/]: {get_human_readable_count(int(trainable_parameters))}")
        grid.add_row(f"[bold]Non-trainable params[/]: {get_human_readable_count(int(frozen))}")
        grid.add_row(f"[bold]Total params[/]: {get_human_readable_count(int(total_parameters))}")
        grid.add_row(f"[bold]Total estimated model params size (MB)[/]: {get_formatted_model_size(model_size)}")
        get_console().print(table, grid)
