"""Text classification over any ``AutoModelForSequenceClassification`` checkpoint (hub name or folder).

``export_pretrained`` writes the trained network with its tokenizer as a Hugging Face folder (``config.json``
with the label names, weights, tokenizer files) that ``transformers.pipeline("text-classification", model=...)``,
``from_pretrained`` or another config's ``model.init_args.model_name_or_path`` loads as it is.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from jsonargparse.typing import PositiveInt
from transformers import AutoModelForSequenceClassification

from common.errors import TbxFinetuneError
from modules.classifier import ClassificationModule

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def pad_to_bucket(inputs: dict[str, torch.Tensor], bucket: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad every ``(batch, length)`` input to the next multiple of ``bucket`` tokens, masked out: the padded
    positions get ``attention_mask`` 0, ``pad_token_id`` and token type 0, as the collator's own padding does."""
    length = next(iter(inputs.values())).shape[1]
    extra = -length % bucket
    if extra == 0:
        return inputs
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    return {key: torch.nn.functional.pad(value, (0, extra), value=fill.get(key, 0)) for key, value in inputs.items()}


class TextClassifier(ClassificationModule):
    """A BERT-family encoder with a fresh classification head sized for the dataset's labels.

    Args:
        model_name_or_path: Hub name (``bert-base-uncased``) or a local folder written by ``save_pretrained``.
        trust_remote_code: Allow the checkpoint's own Python code to run; off unless the config says so.
        compile_bucket: With ``compile``, pad every batch's sequence length up to a multiple of this many tokens
            (masked, so the logits do not change): ``max_length / compile_bucket`` shapes per batch size, each
            compiled once, instead of one per padded length. ``data.init_args.pad_to_multiple_of`` set to the same
            number does it in the loader instead.
        **kwargs: See ``ClassificationModule``.
    """

    def __init__(
        self,
        model_name_or_path: str,
        num_labels: int = 2,
        label_names: list[str] | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        trust_remote_code: bool = False,
        compile_bucket: PositiveInt = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_labels, label_names, learning_rate, weight_decay, warmup_ratio, **kwargs)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)  # checkpoints hold no pickled callables
        self.model = self._pretrained(AutoModelForSequenceClassification, model_name_or_path, trust_remote_code)
        self.model.train()  # from_pretrained returns eval mode: dropout would stay off during fine-tuning
        self.compile_bucket = compile_bucket

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
        if self.compile_network:
            inputs = pad_to_bucket(inputs, self.compile_bucket, self.model.config.pad_token_id or 0)
        return self.model(**inputs).logits

    def export_pretrained(self, folder: str, datamodule: object) -> None:
        """Write a Hugging Face model folder: weights, config (``id2label``/``label2id``) and the tokenizer.

        ``datamodule`` is read duck-typed: its ``tokenizer`` (the one the data was tokenised with) is saved
        beside the model, so the folder tokenises text as training did.
        """
        tokenizer = getattr(datamodule, "tokenizer", None)
        if not hasattr(tokenizer, "save_pretrained"):
            raise TbxFinetuneError(
                f"--export_pretrained: a text model is exported with its tokenizer, and the datamodule "
                f"{type(datamodule).__name__} has none; use a text datamodule (datamodules.TextDataModule)"
            )
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
