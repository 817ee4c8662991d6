"""``python -m app.cli sweep``: Optuna trials that are ordinary runs, read back through Optuna's storage and
TensorBoard's own reader; several workers on one study; every bad sweep file refused before a trial runs."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO, load_events, run_cli, run_main, start_cli, text_config, write_yaml
from optuna.trial import TrialState
from tensorboard.plugins.hparams import plugin_data_pb2

LR_KEY = "model.init_args.learning_rate"
DECAY_KEY = "model.init_args.weight_decay"


def _fit_config(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path, **trainer) -> Path:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["model"]["init_args"]["warmup_ratio"] = 0.0  # the learning rate is at its peak at step 0
    config["trainer"].update({"val_check_interval": 0.5, "log_every_n_steps": 1, **trainer})
    config["test_after_fit"] = True
    return write_yaml(tmp_path / "fit.yaml", config)


def _sweep_file(tmp_path: Path, body: dict, name: str = "lr.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def _study(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'optuna.db'}")


def _hparams(run: Path) -> tuple[dict, list]:
    """The run's HPARAMS record as TensorBoard reads it: its hparam values and the experiment's columns."""
    content = load_events(run).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    return values, list(experiment.hparam_infos)


def test_four_trials_with_pruning_are_runs_that_used_their_values(tmp_path, tiny_bert, sentiment_csv) -> None:
    """A grid of 4 (learning rate × weight decay) on val/loss with the median pruner: every trial is a run whose HPARAMS
    hold the sampled values, whose learning-rate curve peaks at the sampled rate, and whose record says whether it
    was pruned; a pruned run is not tested, a complete one is."""
    config = _fit_config(tmp_path, tiny_bert, sentiment_csv)
    sweep = _sweep_file(
        tmp_path,
        {
            "objective": {"metric": "val/loss", "direction": "minimize"},
            "n_trials": 4,
            "sampler": {"name": "grid", "seed": 4},  # this order runs both 3e-3 trials first
            "pruner": {"name": "median", "n_startup_trials": 1},
            "space": {
                LR_KEY: {"type": "categorical", "choices": [3.0e-3, 1.0e-7]},
                DECAY_KEY: {"type": "categorical", "choices": [0.0, 0.1]},
            },
        },
    )
    result = run_cli("sweep", "--config", str(config), "--sweep", str(sweep), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study_dir = tmp_path / "runs" / "lr"
    trials = _study(study_dir).get_trials()
    assert len(trials) == 4
    assert {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED}, [t.state for t in trials]
    assert sorted((t.params[LR_KEY], t.params[DECAY_KEY]) for t in trials) == [
        (1e-7, 0.0),
        (1e-7, 0.1),
        (3e-3, 0.0),
        (3e-3, 0.1),
    ]
    runs = {Path(t.user_attrs["run"]) for t in trials}
    assert runs == {p for p in study_dir.iterdir() if p.name.startswith("version_")}  # one run per trial, no other
    for trial in trials:
        run = Path(trial.user_attrs["run"])
        hparams, infos = _hparams(run)
        assert hparams[LR_KEY] == pytest.approx(trial.params[LR_KEY])
        assert hparams[DECAY_KEY] == pytest.approx(trial.params[DECAY_KEY])
        assert hparams["trial"] == trial.number
        assert {i.name for i in infos if i.differs} == {LR_KEY, DECAY_KEY, "trial"}  # the table's first columns
        events = load_events(run)
        peak = max(e.value for e in events.Scalars("lr-AdamW/decay"))
        assert peak == pytest.approx(trial.params[LR_KEY], rel=1e-4)  # the value was used, not only recorded
        pruned = trial.state == TrialState.PRUNED
        assert [e.value for e in events.Scalars("trial/pruned")] == [float(pruned)]
        assert ("test/acc" in events.Tags()["scalars"]) is not pruned
        validations = [e.value for e in events.Scalars("val/loss")]
        assert list(trial.intermediate_values.values()) == pytest.approx(validations)
        if not pruned:
            assert trial.value == pytest.approx(min(validations))
    assert yaml.safe_load((study_dir / "sweep.yaml").read_text())["storage"] == "optuna.db"

    # TensorBoard's own server over the study: the searched keys and the trial number are the first columns, the
    # objective and the pruned flag the first metrics
    from tensorboard import program
    from test_tensorboard_screens import experiment, free_port

    server = program.TensorBoard()
    server.configure(argv=[None, "--logdir", str(study_dir), "--host", "127.0.0.1", "--port", str(free_port()),
                           "--load_fast", "false", "--reload_interval", "1"])  # fmt: skip
    url = server.launch()
    deadline = time.monotonic() + 60
    while not (shown := experiment(url, 5)).get("hparamInfos") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [info["name"] for info in shown["hparamInfos"]][:3] == [LR_KEY, DECAY_KEY, "trial"]  # (by key)
    assert [info["name"]["tag"] for info in shown["metricInfos"]][:2] == ["val/loss", "trial/pruned"]

    # the report on the study's folder: the trials ranked, importances, the best trial's config re-runs as a fit
    report = tmp_path / "report"
    code, _, stderr = run_main("report", str(study_dir), "-o", str(report))
    assert code == 0, stderr
    page = (report / "index.html").read_text()
    assert "Sweep lr: val/loss (minimize)" in page and "Parameter importances" in page
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best trial: {best.number}," in page
    ranked_rows = page.split("Trials, best first")[1].split("</table>")[0].count("<tr>") - 1
    assert ranked_rows == 4
    assert len(list(report.glob("sweep_*.png"))) == 2  # the objective against each searched key
    rerun = run_cli("fit", "--config", str(report / "best_config.yaml"), "--trainer.max_epochs", "1")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    hparams, _ = _hparams(tmp_path / "runs" / "lr_best" / "version_0")
    assert hparams[LR_KEY] == pytest.approx(best.params[LR_KEY])
    assert hparams[DECAY_KEY] == pytest.approx(best.params[DECAY_KEY])


def test_two_workers_share_one_study_and_a_rerun_continues_it(tmp_path, tiny_bert, sentiment_csv) -> None:
    """Two processes on one SQLite study: no trial lost or run twice, each trial its own run; the same command
    again finds the study finished; a larger --n_trials runs only the missing ones."""
    config = _fit_config(tmp_path, tiny_bert, sentiment_csv, max_epochs=1)
    sweep = _sweep_file(
        tmp_path,
        {
            "n_trials": 4,
            "sampler": "random",
            "pruner": "none",
            "space": {LR_KEY: {"type": "float", "low": 1.0e-4, "high": 3.0e-3, "log": True}},
        },
        name="shared.yaml",
    )
    args = ("sweep", "--config", str(config), "--sweep", str(sweep))
    workers = [start_cli(*args, log=tmp_path / f"worker{i}.log") for i in range(2)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, (tmp_path / f"worker{i}.log").read_text()[-2000:]
    study_dir = tmp_path / "runs" / "shared"
    trials = _study(study_dir).get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert 4 <= len(trials) <= 5  # each worker checks the count after its trial: one may start a fifth
    runs = [t.user_attrs["run"] for t in trials]
    assert len(set(runs)) == len(runs) == len([p for p in study_dir.iterdir() if p.name.startswith("version_")])
    for trial in trials:
        assert _hparams(Path(trial.user_attrs["run"]))[0][LR_KEY] == pytest.approx(trial.params[LR_KEY])
    again = run_cli(*args)
    assert again.returncode == 0 and len(_study(study_dir).get_trials()) == len(trials)
    more = run_cli(*args, "--n_trials", str(len(trials) + 1))
    assert more.returncode == 0, more.stderr[-2000:]
    assert len(_study(study_dir).get_trials()) == len(trials) + 1


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, tiny_bert, sentiment_csv) -> None:
    config = _fit_config(tmp_path, tiny_bert, sentiment_csv, max_epochs=1)
    sweep = _sweep_file(
        tmp_path,
        {
            "n_trials": 2,
            "sampler": {"name": "grid", "seed": 1},
            "space": {LR_KEY: {"type": "categorical", "choices": [1.0e9, 1.0e-3]}},
        },
        name="nan.yaml",
    )
    result = run_cli("sweep", "--config", str(config), "--sweep", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t.params[LR_KEY]: t for t in _study(tmp_path / "runs" / "nan").get_trials()}
    assert trials[1e9].state == TrialState.FAIL
    assert "train/loss became" in trials[1e9].user_attrs["failure"]
    assert trials[1e-3].state == TrialState.COMPLETE
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sweep", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid_on_the_quickstart(sweep: Path) -> None:
    """Every shipped sweep file reads, and the quickstart parses with every extreme of its space."""
    from app.sweep import check_fit_args
    from app.sweep_spec import read_sweep

    spec = read_sweep(sweep)
    assert check_fit_args(["--config", str(REPO / "configs" / "quickstart.yaml")], spec) == Path("runs") / sweep.stem


def _bad(tmp_path: Path, body: dict | str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body), encoding="utf-8")
    return path


GOOD_SPACE = {LR_KEY: {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True}}


@pytest.mark.parametrize(
    ("body", "extra", "expected"),
    [
        ({"space": GOOD_SPACE, "trials": 3}, [], "unknown key(s) trials"),
        ({"space": {}}, [], "`space:` must map config keys"),
        ({"space": {LR_KEY: {"type": "float", "low": 1.0e-3, "high": 1.0e-5}}}, [], f"space.{LR_KEY}"),
        ({"space": {LR_KEY: {"type": "float", "low": 0.0, "high": 1.0e-3, "log": True}}}, [], f"space.{LR_KEY}"),
        ({"space": {LR_KEY: {"type": "normal", "mean": 1}}}, [], "expected {type: float|int"),
        ({"space": {LR_KEY: {"type": "categorical", "choices": []}}}, [], "choices: [a, b, …]"),
        ({"space": {"model.init_args.lerning_rate": GOOD_SPACE[LR_KEY]}}, [], "lerning_rate"),
        ({"space": {"data.init_args.batch_size": {"type": "categorical", "choices": [16, 0]}}}, [], "batch_size=0"),
        ({"space": GOOD_SPACE, "objective": {"metric": "test/acc"}}, [], "validation metric"),
        ({"space": GOOD_SPACE, "objective": {"direction": "up"}}, [], "maximize or minimize"),
        ({"space": GOOD_SPACE, "sampler": "cmaes"}, [], "sampler='cmaes'"),
        ({"space": GOOD_SPACE, "pruner": {"name": "median", "n_startup": 2}}, [], "pruner:"),
        ({"space": GOOD_SPACE, "sampler": "grid"}, [], "grid needs"),
        ({"space": GOOD_SPACE, "n_trials": 0}, [], "n_trials=0"),
        ("space: [unclosed", [], "not valid YAML"),
        ({"space": GOOD_SPACE}, ["--ckpt_path", "last"], "--ckpt_path"),
        ({"space": GOOD_SPACE}, ["--trainer.devices", "2"], "one device"),
        ({"space": GOOD_SPACE}, ["--trainer.devices", "auto"], "one device"),  # every GPU of the machine
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2_before_any_trial(
    tmp_path, tiny_bert, sentiment_csv, body, extra, expected
) -> None:
    config = _fit_config(tmp_path, tiny_bert, sentiment_csv)
    code, _, stderr = run_main("sweep", "--config", str(config), *extra, "--sweep", str(_bad(tmp_path, body)))
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("tbx-finetune: error:")]
    assert len(lines) == 1 and expected in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()  # nothing written: no study, no run folder


def test_ctrl_c_fails_the_running_trial_once_and_the_same_command_continues(tmp_path, tiny_bert, sentiment_csv) -> None:
    import signal

    config = _fit_config(tmp_path, tiny_bert, sentiment_csv, max_epochs=40)
    sweep = _sweep_file(
        tmp_path,
        {"n_trials": 2, "sampler": "random", "pruner": "none", "space": GOOD_SPACE},
        name="stopped.yaml",
    )
    args = ("sweep", "--config", str(config), "--sweep", str(sweep))
    log = tmp_path / "sweep.log"
    sweep_process = start_cli(*args, log=log)
    deadline = time.monotonic() + 300
    while "trial 1:" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # into trial 1's fit
    sweep_process.send_signal(signal.SIGINT)
    assert sweep_process.wait(timeout=120) == 130, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()
    study_dir = tmp_path / "runs" / "stopped"
    states = [(t.state, t.user_attrs.get("failure")) for t in _study(study_dir).get_trials()]
    assert states == [(TrialState.COMPLETE, None), (TrialState.FAIL, "interrupted (Ctrl-C)")]
    again = run_cli(*args, "--trainer.max_epochs", "1")
    assert again.returncode == 0, again.stderr[-2000:]
    trials = _study(study_dir).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
