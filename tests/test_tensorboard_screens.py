"""What a person sees first: the console of a run, then TensorBoard, asked of a real TensorBoard server over its
HTTP API (the HPARAMS columns, the CUSTOM SCALARS layout, the TEXT tab, a training curve even for a short run)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from conftest import run_cli, text_config, write_yaml
from tensorboard import program

SHOWN = {  # the five default columns, in the order TensorBoard puts them (marked `differs`, then by key)
    "batch_size_effective": "batch size (effective)",
    "model": "model",
    "model.init_args.learning_rate": "learning rate",
    "seed_everything": "seed",
    "trainer.max_epochs": "epochs",
}
METRICS = ["val/acc", "val/f1", "val/loss", "test/acc", "test/f1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def experiment(url: str, limit: int | None) -> dict:
    body = {"experimentName": "", "includeMetrics": True, **({"hparamsLimit": limit} if limit else {})}
    request = urllib.request.Request(
        f"{url}data/plugin/hparams/experiment",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_first_screens(tmp_path: Path, tiny_bert: Path, sentiment_csv: Path) -> None:
    config = text_config(tiny_bert, str(sentiment_csv), tmp_path / "runs")
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=1, accumulate_grad_batches=2)
    del config["trainer"]["log_every_n_steps"]  # the default cadence: a short run still draws its curve
    config["visuals"] = {"embeddings": 8}
    result = run_cli("fit", "--config", str(write_yaml(tmp_path / "fit.yaml", config)))
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr  # what the user reads: no product tips, deprecations or zero FLOPs
    assert "Trainable params" in console and "Tip:" not in console and "FLOPs" not in console, console[-3000:]
    assert "deprecated" not in console and "stepping batches" not in console, console[-3000:]
    assert "args parameter is intended" not in console  # the CLI hands LightningCLI the command line, not a copy

    server = program.TensorBoard()
    server.configure(argv=[None, "--logdir", str(tmp_path / "runs"), "--host", "127.0.0.1",
                           "--port", str(free_port()), "--load_fast", "false", "--reload_interval", "1"])  # fmt: skip
    url = server.launch()
    deadline = time.monotonic() + 60
    while not (shown := experiment(url, 5)).get("hparamInfos") and time.monotonic() < deadline:
        time.sleep(0.5)

    columns = [(info["name"], info.get("displayName", "")) for info in shown["hparamInfos"]]
    assert columns == list(SHOWN.items())
    metrics = [(info["name"]["tag"], info.get("displayName", "")) for info in shown["metricInfos"]][:5]
    assert [tag for tag, _ in metrics] == METRICS
    assert dict(metrics)["val/acc"] == "val accuracy"

    everything = {info["name"] for info in experiment(url, None)["hparamInfos"]}
    assert {"data.init_args.max_length", "trainer.max_epochs", "model.init_args.weight_decay"} <= everything
    # the derived values are the run's: 16 per batch x 2 accumulated x 1 device
    groups_request = urllib.request.Request(
        f"{url}data/plugin/hparams/session_groups",
        data=json.dumps(
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [{"hparam": "batch_size_effective"}, {"hparam": "model"}],
                "startIndex": 0,
                "sliceSize": 10,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(groups_request, timeout=30) as response:
        (group,) = json.loads(response.read())["sessionGroups"]
    assert group["hparams"]["batch_size_effective"] == 32
    assert group["hparams"]["model"] == str(tiny_bert)

    # CUSTOM SCALARS: train and val on one chart
    layout = get(f"{url}data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for c in layout["category"] for chart in c["chart"]}
    assert charts["loss: train vs val"] == ["^train/loss$", "^train/loss_epoch$", "^val/loss$"]
    assert set(charts) == {"loss: train vs val", "accuracy: train vs val", "learning rate", "total gradient norm"}

    # SCALARS: a point every optimizer step (2 epochs x 4 batches / 2 accumulated), the epoch's mean loss
    run = "test/version_0"
    train = get(f"{url}data/plugin/scalars/scalars?run={run}&tag=train/loss")
    assert [point[1] for point in train] == [0, 1, 2, 3]
    assert len(get(f"{url}data/plugin/scalars/scalars?run={run}&tag=train/loss_epoch")) == 2
    samples = get(f"{url}data/plugin/scalars/scalars?run={run}&tag=perf/samples_per_sec")
    tokens = get(f"{url}data/plugin/scalars/scalars?run={run}&tag=perf/tokens_per_sec")
    assert [p[1] for p in samples] == [p[1] for p in tokens] == [0, 1, 2, 3]  # with train/loss
    for (_, _, per_sec), (_, _, tokens_per_sec) in zip(samples, tokens, strict=True):
        assert 0 < per_sec <= tokens_per_sec <= 32 * per_sec  # real tokens: at least one, at most max_length each
    assert "perf/mfu" not in get(f"{url}data/plugin/scalars/tags")[run]  # no known peak FLOPs on a CPU

    # TEXT: tags as written (no /text_summary), markdown rather than a one-cell table; the data's shape
    tags = get(f"{url}data/plugin/text/tags")[run]
    assert "data/label_counts" in tags and not any(tag.endswith("/text_summary") for tag in tags)
    (counts,) = get(f"{url}data/plugin/text/text?run={run}&tag=data/label_counts")
    assert "<table>" in counts["text"] and "<td>train</td>" in counts["text"]

    # PROJECTOR: each point's label, prediction, whether it is right, the confidence and the text
    info = get(f"{url}data/plugin/projector/info?run={run}")
    name = info["embeddings"][-1]["tensorName"]
    with urllib.request.urlopen(f"{url}data/plugin/projector/metadata?run={run}&name={name}", timeout=30) as response:
        rows = [line.split("\t") for line in response.read().decode().splitlines()]
    assert rows[0] == ["label", "predicted", "correct", "confidence", "text"] and len(rows) == 9
