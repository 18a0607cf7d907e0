#!/usr/bin/env bash
# GPU check of catalog scoring, for a lent GPU machine (H100) that cannot reach any registry.
#
# Exit 0 only when onnxruntime really runs the model on CUDAExecutionProvider (read back from
# the session, not from get_available_providers()); prints clips/s for batch sizes
# 64..1024 and times a short Keras training run on the GPU.
#
# Prepare on a machine with internet, in the repository root (the GPU box's Python decides
# the wheels: `python3 -V` there; the lent H100 image has Python 3.12 with PyTorch, JAX and
# CUDA 13 libraries, no TensorFlow, no onnxruntime-gpu):
#
#   # the whole stack (a full venv, several GB):
#   pip download -r requirements.lock -d wheels
#   # or just what this check needs, for Python 3.12 on x86-64 Linux:
#   pip download -d wheels --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       "onnxruntime-gpu[cuda,cudnn]==1.31.1" keras==3.15.1 pydantic pyyaml soundfile
#   # the model to time (needs TensorFlow, so here, not there):
#   python bench/score.py export-model --out bench/results/bench-model.onnx
#
# Then carry wheels/ and bench/results/ to the GPU machine and run, from the repository root:
#
#   bash bench/gpu_check.sh                       # WHEELS=wheels MODEL=bench/results/bench-model.onnx
#   DRY_RUN=1 bash bench/gpu_check.sh             # on a CPU machine: exercises the script, exits 0
#
# Size warning: onnxruntime-gpu's wheel alone is ~300 MB (the CUDA libraries more), so it does
# not fit a 64 MiB working-tree transfer; use a machine image or a copy that holds it.
#
# Environment: WHEELS (wheel folder), VENV (where to build the venv), MODEL (.onnx to time),
# PYTHON (interpreter, default python3), BATCH_SIZES, TRAIN_STEPS, OUT (results folder).
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-wheels}
VENV=${VENV:-${TMPDIR:-/tmp}/genretag-gpu-venv}
MODEL=${MODEL:-bench/results/bench-model.onnx}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then BATCH_SIZES=${BATCH_SIZES:-8,16}; else BATCH_SIZES=${BATCH_SIZES:-64,128,256,512,1024}; fi
TRAIN_STEPS=${TRAIN_STEPS:-30}

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$1" >&2; exit "${2:-1}"; }

say "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || { [ "$DRY_RUN" = 1 ] || fail "nvidia-smi finds no GPU" 2; echo "no GPU (dry run)"; }

say "python environment"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    if [ ! -x "$VENV/bin/python" ]; then
        # --system-site-packages: reuse the image's numpy, onnx and CUDA 13 libraries (nvidia-*)
        "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    PY="$VENV/bin/python"
    if [ -f "$WHEELS/requirements.txt" ]; then
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"
    else
        # the packages this check needs, at the versions of requirements.lock where it pins them
        pins=()
        for name in onnxruntime-gpu keras pydantic pyyaml soundfile; do
            pin=$(grep -iE "^${name}==" requirements.lock | head -n 1 || true)
            pins+=("${pin:-$name}")
        done
        pins[0]="${pins[0]/onnxruntime-gpu/onnxruntime-gpu[cuda,cudnn]}"
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "${pins[@]}" \
            || fail "pip could not install ${pins[*]} from $WHEELS (download them for this Python: $("$PY" -V))"
    fi
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import onnxruntime" 2>/dev/null; then
    PY=.venv/bin/python
else
    PY="$PYTHON"
    echo "no $WHEELS/ with wheels: using $("$PY" -V 2>&1) as it is"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# pip's CUDA 13 libraries (nvidia/cu13/lib, nvidia/cudnn/lib) where onnxruntime.preload_dlls() may miss them
nvidia_libs=$("$PY" - <<'EOF' 2>/dev/null || true
import glob, os, site
dirs = []
for base in site.getsitepackages():
    dirs += glob.glob(os.path.join(base, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(base, "nvidia", "*", "lib"))
print(":".join(dict.fromkeys(dirs)))
EOF
)
[ -n "$nvidia_libs" ] && export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"$PY" - <<'EOF' || fail "the Python environment lacks what scoring needs" 2
import onnxruntime as ort, numpy, onnx, PIL
print("python", __import__("sys").version.split()[0], "| onnxruntime", ort.__version__, "| providers listed:", ort.get_available_providers())
EOF

say "model"
if [ ! -f "$MODEL" ]; then
    "$PY" -c "import tensorflow, tf2onnx" 2>/dev/null \
        || fail "$MODEL is missing and TensorFlow is not here to export one: run 'python bench/score.py export-model --out $MODEL' beforehand and carry it" 2
    "$PY" bench/score.py export-model --out "$MODEL"
fi
ls -l "$MODEL"

say "onnxruntime on CUDA: clips/s per batch size"
gpu_args=(gpu --model "$MODEL" --batch-sizes "$BATCH_SIZES")
if [ "$DRY_RUN" = 1 ]; then gpu_args+=(--allow-cpu --clips 256); fi
"$PY" bench/score.py "${gpu_args[@]}" || fail "onnxruntime is not running on CUDAExecutionProvider (see the reason above)" 3

say "Keras training on the GPU"
if "$PY" -c "import keras" 2>/dev/null; then
    if ! "$PY" -c "import tensorflow" 2>/dev/null && "$PY" -c "import jax" 2>/dev/null; then
        export KERAS_BACKEND=${KERAS_BACKEND:-jax}  # no TensorFlow here: the same Keras model on JAX
    fi
    train_args=(train --steps "$TRAIN_STEPS")
    if [ "$DRY_RUN" = 1 ]; then train_args=(train --steps 2 --batch-size 8); else train_args+=(--require-gpu); fi
    "$PY" bench/score.py "${train_args[@]}" || fail "Keras training did not run on the GPU" 4
else
    echo "keras is not installed: carry keras (and its small dependencies) in $WHEELS to time training" >&2
    [ "$DRY_RUN" = 1 ] || exit 4
fi

if [ "$DRY_RUN" = 1 ]; then say "DRY RUN OK: the script works; nothing ran on a GPU"; else say "OK: scoring runs on CUDA"; fi
