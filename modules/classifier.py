"""The training logic every classifier shares: steps, metrics, optimizer and schedule.

Subclasses only say how to build the network and how to call it on a batch (``forward`` returning logits),
so text and image fine-tuning log the same tags (``train/loss``, ``val/acc``, ``val/f1``, …) and use the same
optimizer recipe.

The optimizer is injected the LightningCLI way (``optimizer: OptimizerCallable``, any ``torch.optim`` class
with its own init_args) and the schedule is any ``transformers`` named schedule (``get_scheduler``: linear,
cosine, constant_with_warmup, …). The learning rate and weight decay stay one key each
(``learning_rate``, ``weight_decay``) because they are set per parameter group: BERT's recipe exempts
biases and normalisation weights from decay, and a staged fine-tune gives the backbone its own ``lr_scale``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import AutoConfig, SchedulerType, get_scheduler

from common.assets import load_pretrained
from common.errors import TbxFinetuneError

STAGES = ("train", "val", "test")
MODEL_KEY = "model.model_name_or_path"
_NO_DECAY = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.Embedding)
SCHEDULES = tuple(s.value for s in SchedulerType)
"""The schedule names ``lr_schedule`` accepts (``transformers.SchedulerType``)."""


def decay_groups(
    module: nn.Module, name: str = "", lr_scale: float = 1.0, weight_decay: float = 0.0, exclude: set = frozenset()
) -> list[dict]:
    """``module``'s parameters but ``exclude`` as two optimizer groups: with weight decay, and without it
    (biases, norms, embeddings, as in BERT's recipe). Frozen parameters are included: they join training when
    unfrozen without the optimizer or its schedule changing shape (what makes a staged fine-tune resumable)."""
    decay, no_decay = [], []
    for sub in module.modules():
        for param_name, param in sub.named_parameters(recurse=False):
            if param not in exclude:
                (no_decay if param_name == "bias" or isinstance(sub, _NO_DECAY) else decay).append(param)
    prefix = f"{name}_" if name else ""
    return [
        {"params": params, "name": f"{prefix}{kind}", "weight_decay": wd, "lr_scale": lr_scale}
        for params, kind, wd in ((decay, "decay", weight_decay), (no_decay, "no_decay", 0.0))
        if params
    ]


class ClassificationModule(LightningModule):
    """Cross-entropy classification with accuracy and macro-F1 per stage; AdamW with linear warmup by default.

    Args:
        num_labels: Number of classes (linked from the datamodule by the CLI).
        label_names: Class names in label-id order (linked from the datamodule); used for predictions.
        learning_rate: Peak learning rate reached after warmup (of every parameter group, times its lr_scale).
        weight_decay: Decoupled weight decay, applied to weight matrices only.
        warmup_ratio: Fraction of all optimizer steps spent warming up linearly from 0.
        optimizer: The optimizer class and its other arguments (``class_path: torch.optim.SGD``, ``init_args:
            {momentum: 0.9}``). Its own ``lr`` and ``weight_decay`` init_args are replaced in every parameter group
            by ``learning_rate`` (times the group's lr_scale) and ``weight_decay`` (0 for biases and norms).
        lr_schedule: A ``transformers`` schedule name: linear, cosine, cosine_with_restarts, polynomial,
            constant, constant_with_warmup, inverse_sqrt, cosine_with_min_lr, warmup_stable_decay, ….
        lr_schedule_kwargs: That schedule's own arguments (``num_cycles``, ``power``, ``min_lr_rate``, …).
        fused_adamw: On CUDA, build ``torch.optim.AdamW`` with ``fused=True`` (one kernel for every parameter instead
            of torch's default multi-tensor loop) unless the optimizer's init_args set ``fused`` or ``foreach``.
            Elsewhere, and for other optimizers, nothing changes.
        compile: Compile the network (``self.model``, not this LightningModule: the loop, metrics and logging stay
            eager) with ``torch.compile(dynamic=False)``: one compile per input shape, so keep shapes few (text models
            pad each batch up to ``compile_bucket`` tokens). Pays off on GPUs over long runs; off by default.
        compile_backend: The ``torch.compile`` backend: ``inductor`` (generated kernels; needs a C++ compiler on the
            CPU), ``aot_eager`` (no code generation, to check a model compiles), or any registered backend name.
    """

    def __init__(
        self,
        num_labels: int = 2,
        label_names: list[str] | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: str = "linear",
        lr_schedule_kwargs: dict[str, Any] | None = None,
        fused_adamw: bool = True,
        compile: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        if lr_schedule not in SCHEDULES:
            raise TbxFinetuneError(f"model.init_args.lr_schedule={lr_schedule!r}: use one of {', '.join(SCHEDULES)}")
        _try_schedule(lr_schedule, lr_schedule_kwargs or {})
        if learning_rate <= 0:
            raise TbxFinetuneError(f"model.init_args.learning_rate={learning_rate}: must be > 0")
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.lr_schedule_kwargs = dict(lr_schedule_kwargs or {})
        self.fused_adamw = fused_adamw
        self.compile_network = compile
        self._network_compiled = False
        self.compile_backend = compile_backend
        if compile and compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise TbxFinetuneError(
                f"model.init_args.compile_backend={compile_backend!r}: use one of "
                f"{', '.join(torch._dynamo.list_backends())} (or register your own with torch._dynamo.register_backend)"
            )
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=num_labels, average="micro"),
                "f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
            }
        )
        # keyed "<stage>_metrics": a ModuleDict key "train" would shadow nn.Module.train()
        self.metrics = nn.ModuleDict({f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES})
        self.epoch_loss = MeanMetric()
        for metric in (self.metrics["train_metrics"], self.epoch_loss):
            metric.persistent(True)  # in checkpoints: a mid-epoch resume keeps what the epoch counted so far

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return logits of shape ``(batch, num_labels)``."""
        raise NotImplementedError

    def _head(self) -> dict[str, Any]:
        """The classification head's size and label names, as a transformers config takes them."""
        names = self.label_names
        return dict(
            num_labels=self.num_labels, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
        )

    def _pretrained(self, auto_class: Any, name_or_path: str, trust_remote_code: bool) -> nn.Module:
        """``auto_class.from_pretrained`` with a head for these labels (a fresh one where the checkpoint's differs in
        size), refused if the checkpoint was fine-tuned on these labels in another order (``check_label_order``)."""
        check_label_order(name_or_path, self.label_names, MODEL_KEY, trust_remote_code=trust_remote_code)
        return load_pretrained(
            auto_class.from_pretrained,
            name_or_path,
            key=MODEL_KEY,
            ignore_mismatched_sizes=True,
            trust_remote_code=trust_remote_code,
            **self._head(),
        )

    def configure_model(self) -> None:
        """Lightning's hook, run in every process once the module is on its device: compile the network there
        (``nn.Module.compile`` keeps the parameter names, so checkpoints and exports stay those of the eager model)."""
        network = getattr(self, "model", None)
        if self.compile_network and isinstance(network, nn.Module) and not self._network_compiled:
            network.compile(dynamic=False, backend=self.compile_backend)
            self._network_compiled = True  # Lightning calls this hook again for test_after_fit

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """The step's loss and (detached) logits, which callbacks (``loggers.visuals``) draw from."""
        labels = batch["labels"]
        logits = self(batch)
        loss = nn.functional.cross_entropy(logits, labels)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), labels)
        on_step = stage == "train"
        # sync_dist: under DDP every logged loss is the mean over all ranks' batches (the global batch), not
        # rank 0's share; one scalar all-reduce per step. Accuracy/F1 are torchmetrics, synced by themselves.
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=True,
            sync_dist=True,
            batch_size=labels.shape[0],
        )
        if stage != "train":  # training metrics are logged once per epoch, not touched on every step
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        else:  # the epoch's mean loss too (train/loss_epoch): beside val/loss every epoch, whatever the cadence
            self.epoch_loss.update(loss.detach(), weight=labels.shape[0])
        return {"loss": loss, "logits": logits.detach()}

    def on_train_epoch_start(self) -> None:
        # Lightning calls this only for an epoch trained from its first batch, never after a mid-epoch restore
        for metric in self._epoch_metrics().values():
            metric.reset()

    def _epoch_metrics(self) -> dict[str, Metric]:
        """The metrics a training epoch accumulates, by state-dict prefix."""
        train = {f"metrics.train_metrics.{n}.": m for n, m in self.metrics["train_metrics"].items(keep_base=True)}
        return {**train, "epoch_loss.": self.epoch_loss}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the epoch's training metric state summed over all ranks (every rank calls this hook, rank 0 writes
        the file); on load only rank 0 keeps it, so the epoch's ``train/*`` after a resume count each batch once."""
        for prefix, metric in self._epoch_metrics().items():
            with metric.sync_context():
                for key, value in metric.state_dict(prefix=prefix).items():
                    checkpoint["state_dict"][key] = value.clone()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # ranks > 0 start from zero counts; a checkpoint from before the state was saved loads with zero counts too
        keep = self._trainer is None or self.trainer.global_rank == 0
        state = checkpoint["state_dict"]
        for prefix, metric in self._epoch_metrics().items():
            for key, value in metric.state_dict(prefix=prefix).items():
                state[key] = state[key] if keep and key in state else torch.zeros_like(value)

    def on_train_epoch_end(self) -> None:
        # logged here, not in training_step: an epoch resumed after its last batch runs no training_step
        self.log_dict(self.metrics["train_metrics"], on_step=False, on_epoch=True)
        self.log("train/loss_epoch", self.epoch_loss, on_step=False, on_epoch=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        confidence, label_ids = self(batch).softmax(dim=-1).max(dim=-1)
        return {"label_ids": label_ids, "probabilities": confidence}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (BERT's decay / no-decay split); subclasses may add ``lr_scale``d ones."""
        return decay_groups(self, weight_decay=self.weight_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        """The injected optimizer over ``parameter_groups`` and the named schedule, stepped every optimizer step.

        The schedule's length comes from Lightning, so accumulation, epochs and max_steps are all honoured.
        """
        optimizer = self.optimizer(self.parameter_groups())
        if self.fused_adamw and wants_fused_adamw(optimizer, self.device):
            optimizer = rebuilt_fused(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate * group.get("lr_scale", 1.0)
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_scheduler(
            self.lr_schedule,
            optimizer,
            num_warmup_steps=int(self.warmup_ratio * total_steps),
            num_training_steps=total_steps,
            scheduler_specific_kwargs=self.lr_schedule_kwargs,
        )
        plateau = self.lr_schedule == SchedulerType.REDUCE_ON_PLATEAU.value  # stepped on val/loss, not per step
        when = {"monitor": "val/loss"} if plateau else {"interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **when}}


def wants_fused_adamw(optimizer: torch.optim.Optimizer, device: torch.device) -> bool:
    """Whether ``optimizer`` should become fused: a plain ``AdamW`` whose ``fused`` and ``foreach`` were left to torch
    (``None``), on a CUDA device, where the fused kernel is the fastest implementation torch has."""
    left_to_torch = optimizer.defaults.get("fused") is None and optimizer.defaults.get("foreach") is None
    return type(optimizer) is torch.optim.AdamW and torch.device(device).type == "cuda" and left_to_torch


def rebuilt_fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer (class, parameter groups with their names and scales, hyperparameters) built with
    ``fused=True``. Called before the first step, so there is no state to carry over; rebuilding, rather than
    passing ``fused`` to the injected callable, works whatever callable the CLI made of the config."""
    cls = type(optimizer)
    accepted = inspect.signature(cls).parameters
    defaults = {key: value for key, value in optimizer.defaults.items() if key in accepted}
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    return cls(groups, **{**defaults, "fused": True, "foreach": None})


def check_label_order(name_or_path: str, label_names: list[str], key: str, **kwargs: Any) -> None:
    """A checkpoint fine-tuned on these very classes in another order would keep its head, rows now under the wrong
    names (``from_pretrained`` relabels a head of the same size): refuse it, naming the order to use."""
    config = load_pretrained(AutoConfig.from_pretrained, name_or_path, key=key, **kwargs)
    id2label = getattr(config, "id2label", None) or {}
    trained = [str(id2label[i]) for i in sorted(id2label)]
    if sorted(trained) == sorted(label_names) and trained != list(label_names):
        raise TbxFinetuneError(
            f"{key}={name_or_path!r} was fine-tuned on the labels {trained} in that order, the data gives "
            f"{list(label_names)}: set data.labels: {trained} (the head's rows follow that order)"
        )


def _try_schedule(name: str, kwargs: dict[str, Any]) -> None:
    """Build the schedule once on a throwaway optimizer, so a missing or misspelled ``lr_schedule_kwargs`` key is
    one clear error now, not a traceback when fit starts (transformers checks them only when building)."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        get_scheduler(name, probe, num_warmup_steps=1, num_training_steps=10, scheduler_specific_kwargs=kwargs)
    except (TypeError, ValueError) as err:
        raise TbxFinetuneError(
            f"model.init_args.lr_schedule_kwargs={kwargs} do not fit lr_schedule={name!r} ({err}); see that schedule "
            "in transformers.optimization for its arguments"
        ) from err
