"""``python -m app.cli sweep --config C.yaml [any fit option …] --sweep S.yaml``: an Optuna study of fits.

Each trial is an ordinary ``fit`` through the same CLI (``app.cli.build_cli``), with the sampled values as the last
overrides, so every feature of a run works in a trial and each trial is a run folder ``<save_dir>/<study>/version_N``
with its events, ``config.yaml`` and checkpoints. Optuna (a kept library) samples, prunes and stores the study: by
default in ``<save_dir>/<study>/optuna.db`` (SQLite), so the same command continues the study; any RDB URL
(``--storage postgresql://…``) lets workers on several machines share one study.

A trial's state reaches its record: ``trial`` is an HPARAMS column beside the searched keys (marked first) and
``trial/pruned`` a metric column. Trials run in this process, one device each: to use several GPUs, start one
worker per GPU on the same study.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from app.cli import FinetuneCLI, build_cli, user_error
from app.console import quiet_known_noise
from app.sweep_spec import FAILURE_ATTR, RUN_ATTR, SWEEP_FILE, SweepSpec, ranked, read_sweep
from common.errors import TbxFinetuneError
from loggers.tensorboardx import DEFAULT_HPARAMS_METRICS, DEFAULT_HPARAMS_SHOWN

PRUNED_TAG = "trial/pruned"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialReporter(Callback):
    """Reports the objective to the trial after each validation, stops a trial Optuna prunes, and puts the trial's
    number and its pruned state into the run's record.

    The step it reports is the validation's index: the k-th validation of every trial comes at the same share of
    training whatever the batch size, so the median pruner compares like with like. (optuna-integration's
    ``PyTorchLightningPruningCallback`` reports by epoch and drops a second validation in an epoch.)"""

    def __init__(self, trial: optuna.Trial, metric: str, direction: str) -> None:
        self.trial, self.metric, self.direction = trial, metric, direction
        self.values: list[float] = []
        self.pruned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.logger is not None:
            trainer.logger.log_hyperparams({"trial": self.trial.number})
            if trainer.is_global_zero:
                self.trial.set_user_attr(RUN_ATTR, str(trainer.logger.log_dir))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        self.trial.report(float(value), step=len(self.values))
        self.values.append(float(value))
        if self.trial.should_prune():
            self.pruned = trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.logger is not None:
            trainer.logger.log_metrics({PRUNED_TAG: float(self.pruned)}, step=trainer.global_step)

    def objective(self) -> float:
        """The best validation value of the trial (the checkpoint ``test_after_fit`` tests when it monitors it)."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            raise TbxFinetuneError(f"the objective {self.metric} was never logged with a finite value in this trial")
        return max(finite) if self.direction == "maximize" else min(finite)


class TrialCLI(FinetuneCLI):
    """A trial's fit: a pruned trial skips ``test_after_fit`` and the export (its weights are not a result)."""

    def after_fit(self) -> None:
        if not any(isinstance(cb, TrialReporter) and cb.pruned for cb in self.trainer.callbacks):
            super().after_fit()


class _Parsed(Exception):
    """Raised by ``_ParseOnly`` with the parsed config: the dry run of a trial's arguments ends there."""


class _ParseOnly(FinetuneCLI):
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()  # our config checks too (negative lr, batch_size 0, …)
        raise _Parsed(self.config[self.subcommand])


def main(argv: Sequence[str] | None = None) -> None:
    """Our errors as one line on stderr and exit 2 before any trial runs; Ctrl-C ends the sweep with exit 130."""
    parser = argparse.ArgumentParser(
        prog="tbx-finetune sweep",
        allow_abbrev=False,
        description="Search hyperparameters with Optuna: every trial is a fit run with the sampled values on top of "
        "the fit options given here (--config …, --trainer.*, --model.*, --data.*).",
    )
    parser.add_argument("--sweep", required=True, metavar="FILE", help="the search space, objective, sampler, pruner")
    parser.add_argument("--n_trials", type=int, help="finished trials the study should hold (default: the file's)")
    parser.add_argument("--study_name", help="default: the file's study_name, else its file name")
    parser.add_argument("--storage", help="an Optuna RDB URL; default sqlite:///<save_dir>/<study>/optuna.db")
    args, fit_args = parser.parse_known_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.x
    sys.argv = sys.argv[:1]  # each trial's CLI gets its arguments as a list; LightningCLI warns if argv has more
    quiet_known_noise()
    for name in ("lightning.pytorch", "lightning.fabric"):  # "Seed set to", GPU/TPU lines: once per parse and trial
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        spec = read_sweep(args.sweep, args.n_trials, args.study_name)
        study_dir = check_fit_args(fit_args, spec)
        study = open_study(spec, study_dir, args.storage)
    except TbxFinetuneError as err:
        parser.exit(2, f"tbx-finetune: error: {err}\n")
    try:
        ended = run_study(study, spec, fit_args)
    except KeyboardInterrupt:  # outside a trial's fit (loading, parsing): Optuna has marked the trial failed
        ended = "interrupted"
    print_trials(study, spec)
    if ended == "interrupted":
        parser.exit(
            130, "sweep interrupted: the running trial is marked failed; the same command continues the study\n"
        )
    storage = f" --storage {_masked(args.storage)}" if args.storage else ""
    print(f"report: python -m app.cli report {study_dir} -o {study_dir}/report{storage}")
    if ended == "failures":
        sys.exit(1)


def check_fit_args(fit_args: list[str], spec: SweepSpec) -> Path:
    """Parse the trial's fit arguments with every extreme of the space before anything runs; return the study's
    folder (``<save_dir>/<study_name>``, where the trials' runs go)."""
    if any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in fit_args):
        raise TbxFinetuneError("sweep: --ckpt_path: trials start fresh; an interrupted sweep continues by itself")
    config = None
    for corner in spec.corners():
        try:
            build_cli(trial_args(fit_args, corner, spec), cli_class=_ParseOnly, exit_on_error=False)
        except _Parsed as parsed:
            config = parsed.args[0]
        except Exception as err:
            reason = user_error(err) or _parser_reason(str(err))
            keys = ", ".join(f"{k}={v!r}" for k, v in corner.items())
            raise TbxFinetuneError(f"{spec.path}: with {keys}: {reason}") from err
    logger = config.trainer.logger
    if not isinstance(logger, argparse.Namespace) or logger.class_path != "loggers.TensorBoardXLogger":
        raise TbxFinetuneError("sweep: trials need the default logger, loggers.TensorBoardXLogger (trainer.logger)")
    if str(config.trainer.devices) != "1" or str(config.trainer.num_nodes) != "1":  # ("auto": every GPU)
        raise TbxFinetuneError(
            f"sweep: trainer.devices={config.trainer.devices}: a trial runs on one device; to use several, start one "
            "sweep worker per device on the same study (CUDA_VISIBLE_DEVICES=<i> … sweep … --storage <url>)"
        )
    return Path(logger.init_args.save_dir) / spec.study_name


def trial_args(fit_args: list[str], values: dict[str, Any], spec: SweepSpec) -> list[str]:
    """``fit`` + the user's arguments + the trial's values (last, so they win) + where and how the run is recorded."""
    shown = {key: DEFAULT_HPARAMS_SHOWN.get(key, key.rsplit(".", 1)[-1]) for key in spec.space} | {"trial": "trial"}
    metrics = {spec.metric: f"{DEFAULT_HPARAMS_METRICS.get(spec.metric, spec.metric)} (objective)"}
    metrics[PRUNED_TAG] = "pruned (1) or not (0)"
    metrics |= {tag: name for tag, name in DEFAULT_HPARAMS_METRICS.items() if tag not in metrics}
    return [
        "fit",
        "--trainer.devices=1",  # before the user's arguments: a config or option asking for more is refused
        *fit_args,
        *(f"--{key}={_cli_value(value)}" for key, value in values.items()),
        f"--trainer.logger.init_args.name={spec.study_name}",
        f"--trainer.logger.init_args.hparams_shown={json.dumps(shown)}",
        f"--trainer.logger.init_args.hparams_metrics={json.dumps(metrics)}",
    ]


def open_study(spec: SweepSpec, study_dir: Path, url: str | None) -> optuna.Study:
    """Create or load the study; write ``sweep.yaml`` beside the trials' runs (for the report)."""
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TbxFinetuneError(f"cannot create {study_dir} ({err.strerror}); set a writable trainer save_dir") from err
    url = url or f"sqlite:///{study_dir / 'optuna.db'}"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers wait for the lock
    for attempt in range(3):
        try:
            # heartbeats: a worker killed mid-trial leaves no RUNNING trial behind; the next worker marks it failed
            study = optuna.create_study(
                study_name=spec.study_name,
                storage=optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=30, grace_period=90),
                sampler=spec.sampler,
                pruner=spec.pruner,
                direction=spec.direction,
                load_if_exists=True,
            )
            break
        except Exception as err:  # a URL SQLAlchemy cannot open, a missing driver: at once
            if attempt == 2 or not isinstance(err, OperationalError | IntegrityError):
                raise TbxFinetuneError(f"--storage {_masked(url)}: {' '.join(str(err).split())[:300]}") from err
            time.sleep(1 + attempt + random.random())  # two workers creating a new database at once: retry
    if study.direction.name.lower() != spec.direction:
        raise TbxFinetuneError(
            f"study {spec.study_name!r} exists and was made to {study.direction.name.lower()}; use another "
            "--study_name for objective.direction " + spec.direction
        )
    stored = url if url.startswith("sqlite") and Path(make_url(url).database or "").parent == study_dir else None
    record = {
        "study_name": spec.study_name,
        "storage": "optuna.db" if stored else _masked(url),
        "objective": {"metric": spec.metric, "direction": spec.direction},
        "space": yaml.safe_load(spec.path.read_text(encoding="utf-8"))["space"],
    }
    (study_dir / SWEEP_FILE).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    return study


def run_study(study: optuna.Study, spec: SweepSpec, fit_args: list[str]) -> str:
    """Run trials until the study holds ``spec.n_trials`` finished ones (counting every worker's): ``"done"``. Stop
    early on Ctrl-C (``"interrupted"``) or when three (at most ``n_trials``) fail in a row here (``"failures"``): a
    config whose every trial fails must not loop forever."""
    failures, most_failures, interrupted = 0, min(spec.n_trials, 3), False

    def objective(trial: optuna.Trial) -> float:
        nonlocal failures, interrupted
        values = spec.suggest(trial)
        print(f"\ntrial {trial.number}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()), flush=True)
        reporter = TrialReporter(trial, spec.metric, spec.direction)
        try:
            build_cli(
                trial_args(fit_args, values, spec), cli_class=TrialCLI, callbacks=(reporter,), exit_on_error=False
            )
        except SystemExit:  # Ctrl-C in fit: Lightning (or our stop at the next batch) ends the fit, then exit(1)
            trial.set_user_attr(FAILURE_ATTR, "interrupted (Ctrl-C)")
            interrupted = True
            return math.nan  # failed, not counted; the study stops after this trial
        except Exception as err:
            ours = user_error(err)
            reason = str(ours or f"{type(err).__name__}: {' '.join(str(err).split())}")
            trial.set_user_attr(FAILURE_ATTR, reason[:1000])
            failures += 1
            print(f"trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
            if ours is not None:
                return math.nan  # Optuna marks the trial failed; our one-line reason says why, no traceback
            raise  # anything else (a bug, out of memory): failed too, and Optuna logs its traceback
        if reporter.pruned:
            raise optuna.TrialPruned(
                f"pruned at validation {len(reporter.values) - 1} ({spec.metric}={reporter.values[-1]:.4g})"
            )
        failures = 0
        return reporter.objective()

    def enough(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        if interrupted or len(study.get_trials(deepcopy=False, states=FINISHED)) >= spec.n_trials:
            study.stop()
        elif failures >= most_failures:
            print(f"{failures} trials in a row failed: sweep stopped (see the reasons above)", file=sys.stderr)
            study.stop()

    if len(study.get_trials(deepcopy=False, states=FINISHED)) < spec.n_trials:
        study.optimize(objective, callbacks=[enough], catch=(Exception,))
    return "interrupted" if interrupted else "failures" if failures >= most_failures else "done"


def print_trials(study: optuna.Study, spec: SweepSpec) -> None:
    """The study's trials, best first (rich table): what the report's first table shows too."""
    table = Table(title=f"study {study.study_name}: {spec.metric} ({spec.direction}), best first")
    for column in ("trial", "state", spec.metric, *spec.space, "run"):
        table.add_column(column.rsplit(".", 1)[-1])
    for trial in ranked(study.get_trials(deepcopy=False), spec.direction):
        table.add_row(
            str(trial.number),
            trial.state.name.lower(),
            _shown(trial.value),
            *(_shown(trial.params.get(key)) for key in spec.space),
            Path(trial.user_attrs.get(RUN_ATTR, "—")).name,
        )
    Console().print(table)


def _parser_reason(message: str) -> str:
    """jsonargparse's reason without its union bookkeeping: what the subclass refused and why."""
    message = " ".join(message.split())
    inner = re.search(r"Problem with given class_path '[^']+': (.*?)(?: - Expected a <class 'NoneType'>|$)", message)
    return inner.group(1) if inner else message


def _shown(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _cli_value(value: Any) -> str:
    """A sampled value as jsonargparse reads it from the command line."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _masked(url: str) -> str:
    """The URL without its password: it is printed and written into the study's folder."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


if __name__ == "__main__":
    main()
