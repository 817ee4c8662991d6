"""Image classification over ``AutoModelForImageClassification`` (ResNet): pretrained, or from scratch.

Batches arrive as ``uint8`` images; ``on_after_batch_transfer`` scales, augments (training only) and
normalises them on the batch's device (``modules/augment.py``). ``export_pretrained`` writes the trained
network as a Hugging Face folder (``config.json``, weights, ``preprocessor_config.json``) that this class,
or any transformers code, loads again with ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from transformers import AutoConfig, AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

from common.assets import image_processor_config, load_pretrained, locate
from modules.augment import Augmentation, Preprocess, image_grid
from modules.classifier import MODEL_KEY, ClassificationModule, decay_groups
from modules.finetuning import StagedUnfreeze


@dataclass
class ResNetSpec:
    """A ResNet built from scratch (``transformers.ResNetConfig``); defaults give a small 3-stage net.

    Args:
        depths: Residual blocks per stage.
        hidden_sizes: Channels per stage (each stage after the first halves the resolution).
        embedding_size: Channels of the stem convolution.
        layer_type: ``basic`` (two 3x3 convs, ResNet-18/34) or ``bottleneck`` (ResNet-50+).
        downsample_in_first_stage: Stride 2 in the first stage (ImageNet style); off keeps small images large.
    """

    depths: list[int] = field(default_factory=lambda: [1, 1, 1])
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 128])
    embedding_size: int = 32
    layer_type: str = "basic"
    downsample_in_first_stage: bool = False


class ImageClassifier(ClassificationModule):
    """A ResNet with a classification head sized for the dataset's labels.

    Args:
        model_name_or_path: Hub name (``microsoft/resnet-50``) or a ``save_pretrained`` folder; ``None``
            builds ``resnet`` from scratch.
        pretrained: ``False`` keeps the architecture of ``model_name_or_path`` but starts from random
            weights (the honest baseline for a fine-tuning comparison).
        resnet: Architecture for training from scratch (used when ``model_name_or_path`` is ``None``).
        num_channels: Image channels, linked from the data; a pretrained model's own count wins, and
            batches are converted to it on the device.
        image_mean: Per-channel mean for normalisation; ``None``: the checkpoint's image processor, else 0.5.
        image_std: Per-channel standard deviation; ``None``: the checkpoint's image processor, else 0.5.
        augmentation: Train-time augmentation on the device; ``None`` (default): none.
        freeze_backbone_epochs: Train only the new head for this many epochs, then unfreeze the backbone.
        backbone_lr_factor: The unfrozen backbone's learning rate as a fraction of ``learning_rate``.
        log_samples: Keep one grid of augmented training inputs per fit in ``sample_grid``, for the visual record
            (``loggers.visuals`` writes it to TensorBoard's IMAGES tab as ``train/augmented_inputs``).
        trust_remote_code: Allow the checkpoint's own Python code to run; off unless the config says so.
        **kwargs: See ``ClassificationModule``.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        num_labels: int = 2,
        label_names: list[str] | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        pretrained: bool = True,
        resnet: ResNetSpec | None = None,
        num_channels: int = 3,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        augmentation: Augmentation | None = None,
        freeze_backbone_epochs: int = 0,
        backbone_lr_factor: float = 0.1,
        log_samples: bool = True,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_labels, label_names, learning_rate, weight_decay, warmup_ratio, **kwargs)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)  # checkpoints hold no pickled callables
        for key, value in self.hparams.items():  # ... nor pickled classes: weights_only=True loads plain data only
            if is_dataclass(value):
                self.hparams[key] = asdict(value)
        processor: dict = {}
        if isinstance(augmentation, dict):  # hparams of a checkpoint hold dataclasses as dicts (see above)
            augmentation = Augmentation(**augmentation)
        if model_name_or_path is None:
            spec = ResNetSpec(**resnet) if isinstance(resnet, dict) else resnet or ResNetSpec()
            config = ResNetConfig(num_channels=num_channels, **vars(spec), **self._head())
            self.model = ResNetForImageClassification(config)
        else:
            name = locate(model_name_or_path)
            if pretrained:
                self.model = self._pretrained(AutoModelForImageClassification, name, trust_remote_code)
            else:
                common = {"trust_remote_code": trust_remote_code}
                config = load_pretrained(AutoConfig.from_pretrained, name, key=MODEL_KEY, **self._head(), **common)
                self.model = AutoModelForImageClassification.from_config(config, **common)
            processor = image_processor_config(name, MODEL_KEY)
        self.model.train()  # from_pretrained returns eval mode: BatchNorm would not learn the new data
        self.preprocess = Preprocess(
            image_mean or processor.get("image_mean") or [0.5],
            image_std or processor.get("image_std") or [0.5],
            self.model.config.num_channels,
            augmentation,
        )
        self._samples_taken = not log_samples
        self.sample_grid: tuple[int, torch.Tensor] | None = None

    @property
    def backbone(self) -> torch.nn.Module:
        """Everything but the classification head (what ``freeze_backbone_epochs`` freezes)."""
        return self.model.base_model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(pixel_values=batch["pixel_values"]).logits

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict:
        """Preprocess on the device; ``self.training`` is False in validation, test and predict."""
        pp = self.preprocess
        images = pp.augment(pp.to_unit(batch["pixel_values"]))
        if self.training and not self._samples_taken:
            self._samples_taken = True
            # (step, grid), written by loggers.visuals and then dropped
            self.sample_grid = (self.global_step, image_grid(images[:32].detach().cpu()))
        return {**batch, "pixel_values": pp.normalize(images)}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """With a staged fine-tune, the backbone's groups run at ``backbone_lr_factor`` times the head's rate."""
        if self.hparams.freeze_backbone_epochs <= 0:
            return super().parameter_groups()
        backbone = set(self.backbone.parameters())
        return [
            *decay_groups(self, weight_decay=self.weight_decay, exclude=backbone),
            *decay_groups(self.backbone, "backbone", self.hparams.backbone_lr_factor, self.weight_decay),
        ]

    def configure_callbacks(self) -> list[Callback]:
        epochs = self.hparams.freeze_backbone_epochs
        return [StagedUnfreeze(epochs)] if epochs > 0 else []

    def export_pretrained(self, folder: str, datamodule: object) -> None:
        """Write a Hugging Face model folder: weights + config (with label names) + preprocessor config.

        ``datamodule`` is read duck-typed: its ``image_size`` (the side the loaders produce) goes into the
        preprocessor config, with this model's normalisation.
        """
        image_size = datamodule.image_size
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder)
        processor = {
            "image_processor_type": "ConvNextImageProcessor",  # what transformers uses for ResNet checkpoints
            "do_resize": True,
            "size": {"shortest_edge": image_size},
            "crop_pct": 1.0,
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": self.preprocess.mean.flatten().tolist(),
            "image_std": self.preprocess.std.flatten().tolist(),
        }
        with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
            json.dump(processor, f, indent=2)
