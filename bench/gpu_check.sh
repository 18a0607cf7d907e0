#!/usr/bin/env bash
# GPU check for a lent GPU machine that cannot reach any package registry.
#
# Exits 0 only when onnxruntime really runs the model on CUDAExecutionProvider (read back
# from the session, not from get_available_providers()). It prints, for every model given:
# onnxruntime clips/s per batch size on CUDA against the CPU provider on the same machine
# and batches; then end-to-end catalog tagging of synthetic tracks; then seconds per step
# of a short Keras training run of the same architecture on the GPU.
#
# Prepare here (internet through the package registries), in the repository root:
#
#   python bench/score.py export-model --out bench/results/bench-model-64.onnx  --image-size 64 64
#   python bench/score.py export-model --out bench/results/bench-model-128.onnx --image-size 128 128
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ... -d .whl \
#       keras namex optree pydantic pydantic-core annotated-types typing-inspection typing-extensions \
#       soundfile cffi pycparser sqlalchemy greenlet          # versions from requirements.lock
#   # onnxruntime-gpu's wheel (255 MB) is too big for one transfer: carry it unpacked and
#   # re-compressed (tar.xz of onnxruntime/ + its dist-info) in parts, joined on the machine.
#
# The lent H100 image has Python 3.12 with numpy, onnx, Pillow, pandas, JAX and the CUDA 13
# libraries (pip's nvidia-* packages), but no TensorFlow and no onnxruntime-gpu: training is
# timed with the same Keras model on the JAX backend.
#
#   WHEELS=.whl ORT_TARBALL=/tmp/ort.tar.xz MODELS="bench/results/bench-model-64.onnx ..." bash bench/gpu_check.sh
#   DRY_RUN=1 bash bench/gpu_check.sh      # on a CPU machine: exercises the script, exits 0
#
# Environment: WHEELS (folder of wheels, installed with --no-deps), ORT_TARBALL (unpacked
# onnxruntime-gpu), SITE (install target), MODELS (.onnx files to time), PYTHON, BATCH_SIZES,
# TRACKS (tracks to tag end to end), TRAIN_STEPS, OUT (results folder).
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
ORT_TARBALL=${ORT_TARBALL:-}
SITE=${SITE:-${TMPDIR:-/tmp}/genretag-gpu-site}
MODELS=${MODELS:-bench/results/bench-model.onnx}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then
    BATCH_SIZES=${BATCH_SIZES:-8,16}; TRACKS=${TRACKS:-4}; TRAIN_STEPS=${TRAIN_STEPS:-2}; TRAIN_BATCH=8; CLIPS=64
else
    BATCH_SIZES=${BATCH_SIZES:-64,256,1024}; TRACKS=${TRACKS:-200}; TRAIN_STEPS=${TRAIN_STEPS:-40}; TRAIN_BATCH=64; CLIPS=8192
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$1" >&2; exit "${2:-1}"; }

say "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || { [ "$DRY_RUN" = 1 ] || fail "nvidia-smi finds no GPU" 2; echo "no GPU (dry run)"; }
echo "cpus: $(nproc)"

say "python environment"
PY=$PYTHON
if ls "$WHEELS"/*.whl >/dev/null 2>&1 || [ -n "$ORT_TARBALL" ]; then
    mkdir -p "$SITE"
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl \
            || fail "pip could not install the wheels in $WHEELS for $("$PY" -V)" 2
    fi
    if [ -n "$ORT_TARBALL" ]; then
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$ORT_TARBALL" "$SITE" \
            || fail "cannot unpack $ORT_TARBALL" 2
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD"

# pip's CUDA 13 libraries (nvidia/cu13/lib, nvidia/cudnn/lib) where onnxruntime.preload_dlls() may miss them
nvidia_libs=$("$PY" - <<'PYEOF' 2>/dev/null || true
import glob, os, site
dirs = []
for base in site.getsitepackages():
    dirs += glob.glob(os.path.join(base, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(base, "nvidia", "*", "lib"))
print(":".join(dict.fromkeys(dirs)))
PYEOF
)
[ -n "$nvidia_libs" ] && export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if ! "$PY" -c "import tensorflow" 2>/dev/null && "$PY" -c "import jax" 2>/dev/null; then
    export KERAS_BACKEND=${KERAS_BACKEND:-jax}  # no TensorFlow here: the same Keras model on JAX
fi
"$PY" - <<'PYEOF' || fail "the Python environment lacks what scoring needs" 2
import sys, onnxruntime as ort, keras
print("python", sys.version.split()[0], "| onnxruntime", ort.__version__, ort.__file__,
      "| keras", keras.__version__, keras.backend.backend(), "| providers listed:", ort.get_available_providers())
PYEOF

status=0
for model in $MODELS; do
    [ -f "$model" ] || fail "$model is missing: export it beforehand (python bench/score.py export-model, needs TensorFlow) and carry it" 2
    say "onnxruntime: $model"
    gpu_args=(gpu --model "$model" --batch-sizes "$BATCH_SIZES" --clips "$CLIPS")
    if [ "$DRY_RUN" = 1 ]; then gpu_args+=(--allow-cpu); fi
    "$PY" bench/score.py "${gpu_args[@]}" || { echo "FAIL: onnxruntime is not running on CUDAExecutionProvider (see the reason above)" >&2; status=3; }
done

last_model=${MODELS##* }
say "end-to-end catalog tagging: $TRACKS synthetic 30-s 44.1 kHz stereo FLAC tracks, $last_model"
"$PY" bench/score.py e2e --model "$last_model" --tracks "$TRACKS" --max-windows 0 --batch-size 1024 \
    --workers "$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))" || status=5

say "Keras training ($KERAS_BACKEND backend)"
for model in $MODELS; do
    size=$("$PY" -c 'import sys; from genretag.onnx.contract import read_contract; print(*read_contract(sys.argv[1]).preprocessing.image_size)' "$model")
    train_args=(train --steps "$TRAIN_STEPS" --batch-size "$TRAIN_BATCH" --image-size $size)
    if [ "$DRY_RUN" != 1 ]; then train_args+=(--require-gpu); fi
    "$PY" bench/score.py "${train_args[@]}" || { echo "FAIL: Keras training did not run on the GPU" >&2; status=4; }
done

if [ "$status" != 0 ]; then fail "see above" "$status"; fi
if [ "$DRY_RUN" = 1 ]; then say "DRY RUN OK: the script works; nothing ran on a GPU"; else say "OK: scoring runs on CUDA"; fi
