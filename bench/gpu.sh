#!/usr/bin/env bash
# GPU figures (issue 11, item 3): bench/gpu_fps.py under KERAS_BACKEND=jax, one markdown table with the
# paper's GTX 1080 Ti numbers beside ours (Table 1 at 513: MobileNet-V2, ResNet-50, Xception-65 at
# scales 1.0 and 1.25+1.75; FlowNet2-s interpolation; the dynamic pipeline at AKI 10/30/100 beside
# per-frame N). Written for the device tool's GPU machines (nvidia-h100-x1, nvidia-h200), whose image
# has JAX, numpy, h5py, absl-py, rich, ml-dtypes and opencv but neither TensorFlow nor Keras: Keras
# travels as wheels, and nothing on the benchmark's path imports TensorFlow.
#
# 1. Once, here, in the repository root (.whl/ is in .gitignore), fetch the wheels for the machine's
#    Python 3.12:
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#        -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# 2. Run it with the device tool (one call; budget: the machine's start + about 5 minutes):
#      run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=540)
#    (kind left out: an H100 or an H200; the table names the GPU). The log and the rows come back as
#    $OUT/gpu_fps.log and $OUT/gpu_fps.json; put the table in README.md with the GPU's name.
# Here, as a CPU check of the same script: bash bench/gpu.sh --tiny   (65 px, a few calls; PYTHON=
# .venv/bin/python by default when it exists). Extra arguments go to bench/gpu_fps.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import keras" 2>/dev/null; then
  ls .whl/keras-*.whl >/dev/null 2>&1 || { echo "error: no keras here and no .whl/keras-*.whl (see step 1 above)" >&2; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/keras-*.whl .whl/namex-*.whl .whl/optree-*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
out="${OUT:-/tmp/gpu_fps}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
"$PYTHON" bench/gpu_fps.py --json="$out/gpu_fps.json" "$@" 2>&1 | tee "$out/gpu_fps.log"
