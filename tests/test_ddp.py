"""Distributed data-parallel on CPU (gloo): one run directory, one events file, the metrics of the global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, load_events, run_cli, text_config, write_yaml, writers
from tiny_assets import build_tiny_bert, write_sentiment_csv

DDP_CPU = str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")


def test_ddp_cpu_two_processes_write_one_events_file(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "ddp.yaml", text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs"))
    result = run_cli("fit", "--config", str(config), "--config", DDP_CPU, "--trainer.max_epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tmp_path / "runs" / "test"
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    ((folder, _),) = writers(tmp_path / "runs")  # one process wrote (global rank 0), into the run folder
    assert folder == runs / "version_0"
    events = load_events(runs / "version_0")
    assert {"train/loss", "val/acc"} <= set(events.Tags()["scalars"])
    # 129 train rows over 2 ranks of batch 16 → 5 optimizer steps; every step index is unique
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps))
    assert (runs / "version_0" / "config.yaml").is_file()
    assert (runs / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def deterministic_job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """No dropout and splits that divide evenly, so 2 x batch 8 and 1 x batch 16 see the same global batches."""
    tmp = tmp_path_factory.mktemp("multinode")
    model = build_tiny_bert(tmp / "bert", dropout=0.0)
    files = {
        split: str(write_sentiment_csv(tmp / f"{split}.csv", rows=rows, seed=seed))
        for split, rows, seed in (("train", 64, 1), ("validation", 32, 2), ("test", 16, 3))
    }

    def config(name: str, batch_size: int) -> Path:
        cfg = text_config(model, files, tmp / name, batch_size=batch_size)
        cfg["trainer"].update(max_epochs=1, log_every_n_steps=1, num_sanity_val_steps=0)
        return write_yaml(tmp / f"{name}.yaml", cfg)

    return {"tmp": tmp, "config": config}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_matches_single_process_on_the_global_batch(deterministic_job: dict) -> None:
    """``torchrun --nnodes 2 --nproc_per_node 1`` twice on localhost, as on two machines, vs one process."""
    tmp, port = deterministic_job["tmp"], free_port()
    config = deterministic_job["config"]("two_nodes", batch_size=8)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(node),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                "-m",
                "app.cli",
                "fit",
                "--config",
                str(config),
                "--trainer.strategy",
                "ddp",
                "--trainer.num_nodes",
                "2",
                "--trainer.devices",
                "1",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    for launcher, output in zip(launchers, outputs, strict=True):
        assert launcher.returncode == 0, output[-3000:]

    # the same sampler logic (DistributedSampler, one replica) and the same global batch of 16
    single = deterministic_job["config"]("single", batch_size=16)
    result = run_cli("fit", "--config", str(single), "--trainer.strategy", "ddp", "--trainer.devices", "1")
    assert result.returncode == 0, result.stderr[-3000:]

    two_nodes_runs = tmp / "two_nodes" / "test"
    assert [p.name for p in two_nodes_runs.iterdir()] == ["version_0"]  # one run dir, agreed by both nodes
    assert len(writers(tmp / "two_nodes")) == 1  # written by global rank 0 only
    multi, one = load_events(two_nodes_runs / "version_0"), load_events(tmp / "single" / "test" / "version_0")
    for tag in ("val/acc", "val/f1", "val/loss", "train/loss"):
        got, expected = multi.Scalars(tag), one.Scalars(tag)
        assert [e.step for e in got] == [e.step for e in expected], tag
        assert [e.value for e in got] == pytest.approx([e.value for e in expected], rel=1e-4, abs=1e-5), tag
    assert [e.step for e in multi.Scalars("train/loss")] == [0, 1, 2, 3]  # 64 rows / global batch 16
