"""``scripts/bench_peers.py`` end to end on the tiny BERT: it runs, and its JSON holds sane, consistent numbers.

Timings and ratios are never asserted: on a shared 2-core machine they are noise. What is checked is what
would be wrong whatever the machine: missing contestants, non-positive or non-finite times, throughput that
does not follow from the step times, more tokens than the batches could hold, accuracies outside [0, 1].
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BATCH = 16
MAX_LENGTH = 32
STEPS = 3
ROUNDS = 2
# 160 rows less the carved-out test and val splits leave > 64 for train: 64 is exactly 4 full batches of 16,
# so every timed step has BATCH samples and samples/s must equal BATCH / (mean seconds per step)
MAX_SAMPLES = 64


def run_bench(model: Path, data: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The bench on the tiny model; ``extra`` options come last, so they override the ones here."""
    out = tmp_path / "peers.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),  # the tokenised splits stay out of the user's cache
    }
    args = [
        *("--model", str(model), "--data", str(data), "--text-column", "sentence", "--label-column", "sentiment"),
        *("--batch-size", str(BATCH), "--max-length", str(MAX_LENGTH), "--max-samples", str(MAX_SAMPLES)),
        *("--steps", str(STEPS), "--warmup-steps", "1", "--rounds", str(ROUNDS), "--epochs", "1"),
        *("--json", str(out)),
        *extra,
    ]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_peers.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(out.read_text(encoding="utf-8"))


def check_available(name: str, entry: dict) -> None:
    for key in ("ms_per_step_mean", "ms_per_step_median", "samples_per_s", "tokens_per_s"):
        assert math.isfinite(entry[key]) and entry[key] > 0, (name, key, entry[key])
    assert entry["timed_steps"] == STEPS * ROUNDS, name
    from_step_time = BATCH / (entry["ms_per_step_mean"] / 1e3)
    assert math.isclose(entry["samples_per_s"], from_step_time, rel_tol=1e-6), (name, entry["samples_per_s"])
    assert entry["tokens_per_s"] <= entry["samples_per_s"] * MAX_LENGTH * (1 + 1e-9), name
    assert entry["tokens_per_s"] <= entry["padded_tokens_per_s"] * (1 + 1e-9), name
    assert 0.0 <= entry["test_accuracy"] <= 1.0, name
    assert entry["peak_memory_mb"] is None, name  # CPU: only the process-wide peak, reported once
    assert math.isfinite(entry["ratio_to_bare_median"]) and entry["ratio_to_bare_median"] > 0, name


def test_bench_peers_runs_end_to_end(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    result, numbers = run_bench(tiny_bert, sentiment_csv, tmp_path)
    contestants = numbers["contestants"]
    assert list(contestants) == ["bare", "hf", "ours"]
    for name, entry in contestants.items():
        if entry["available"]:
            check_available(name, entry)
        else:
            assert name == "hf", f"only HF Trainer may be unavailable (missing accelerate); {name}: {entry}"
            assert entry["reason"].strip(), "an unavailable contestant must say why"
            assert "unavailable" in result.stdout and entry["reason"] in result.stdout
    assert contestants["bare"]["ratio_to_bare_median"] == 1.0
    assert numbers["memory"]["process_peak_rss_mb"] > 0
    assert numbers["config"]["rows"]["train"] == MAX_SAMPLES
    for title in ("bare PyTorch loop", "HF transformers.Trainer", "ours (Lightning)"):
        assert title in result.stdout  # the table has a row for each


def test_bench_peers_ours_compile(tiny_bert: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    """``--ours-compile BACKEND`` compiles ours' network (aot_eager here: no code generation, seconds on a CPU)
    and the run still counts every timed step; the other two stay eager; the JSON and the table say so."""
    result, numbers = run_bench(
        tiny_bert, sentiment_csv, tmp_path, "--ours-compile", "aot_eager", "--rounds", "1", "--epochs", "0"
    )
    assert numbers["config"]["ours_compile"] == "aot_eager"
    assert "ours-compile: aot_eager" in result.stdout
    ours = numbers["contestants"]["ours"]
    assert ours["available"] and ours["timed_steps"] == STEPS
    assert math.isfinite(ours["ms_per_step_median"]) and ours["ms_per_step_median"] > 0
    assert ours["test_accuracy"] is None  # --epochs 0
