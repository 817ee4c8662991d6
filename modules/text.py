"""Text classification over any ``AutoModelForSequenceClassification`` checkpoint (hub name or folder).

``export_pretrained`` writes the trained network with its tokenizer as a Hugging Face folder (``config.json``
with the label names, weights, tokenizer files) that ``transformers.pipeline("text-classification", model=...)``,
``from_pretrained`` or another config's ``model.init_args.model_name_or_path`` loads as it is.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from common.assets import load_pretrained
from common.errors import TbxFinetuneError
from modules.classifier import ClassificationModule, check_label_order

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextClassifier(ClassificationModule):
    """A BERT-family encoder with a fresh classification head sized for the dataset's labels.

    Args:
        model_name_or_path: Hub name (``bert-base-uncased``) or a local folder written by ``save_pretrained``.
        trust_remote_code: Allow the checkpoint's own Python code to run; off unless the config says so.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(num_labels, label_names, learning_rate, weight_decay, warmup_ratio, **kwargs)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)  # checkpoints hold no pickled callables
        key = "model.model_name_or_path"
        check_label_order(model_name_or_path, self.label_names, key, trust_remote_code=trust_remote_code)
        self.model = load_pretrained(
            AutoModelForSequenceClassification.from_pretrained,
            model_name_or_path,
            key=key,
            num_labels=num_labels,
            id2label=dict(enumerate(self.label_names)),
            label2id={name: i for i, name in enumerate(self.label_names)},
            ignore_mismatched_sizes=True,
            trust_remote_code=trust_remote_code,
        )
        self.model.train()  # from_pretrained returns eval mode: dropout would stay off during fine-tuning

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
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
