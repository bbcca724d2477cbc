"""bench/gpu_fps.py (issue 11, item 3) in its --tiny mode on the CPU, and its JAX compilation path with
TensorFlow made unimportable (the GPU machine has JAX and no TensorFlow)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "gpu_fps.py")


def test_tiny_mode_prints_the_table_with_the_papers_numbers(tmp_path):
    """One backbone (MobileNet-V2, also the pipeline's N) under TensorFlow: about 40 s on 2 cores."""
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--tiny", "--backbones=mobilenet_v2",
                           "--pipeline_backbone=mobilenet_v2", "--akis=2,5", f"--json={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert result["size"] == 65 and result["backend"] == "tensorflow"
    assert [r["paper_fps"] for r in result["rows"][:2]] == [58.8, 21.7]          # Table 1, MobileNet-V2
    assert [r["scales"] for r in result["rows"][:2]] == [[1.0], [1.25, 1.75]]
    assert rows["FlowNet2-s interpolation (F + warp x scale + task_net)"]["paper_fps"] == 153.8
    for k in (2, 5):                                    # streamed at exactly AKI = K
        assert rows[f"dynamic, fixed K = {k}, streamed (eval.runtime)"]["aki"] == k
    assert rows["per-frame N, streamed (eval.runtime, K = 1)"]["aki"] == 1
    assert len(result["rows"]) == 2 + 1 + 3 + 2
    for r in result["rows"]:
        assert math.isfinite(r["fps"]) and r["fps"] > 0 and r["ms"] == pytest.approx(1000.0 / r["fps"])
    # the RL rows are the sweeps' formula at the device stage times: K frames with one key, the flow on
    # every decided frame (eval.curves.model_time_fps)
    stage = result["stages"]["device_ms"]
    for k in (2, 5):
        frames = rows[f"dynamic, fixed K = {k}, streamed (eval.runtime)"]["frames"]
        keys, decisions = frames // k, frames - 1
        total = (keys * stage["key"] + (frames - keys) * stage["warp_task"]
                 + decisions * (stage["flow"] + stage["policy"]))
        assert rows[f"dynamic, RL scheduler at AKI {k}, priced at the device stage times"]["fps"] == \
            pytest.approx(1000.0 * frames / total)
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(result["rows"]) and "paper FPS (1080 Ti)" in table[0]


_JAX_CHILD = r"""
import os, sys
sys.modules["tensorflow"] = None            # as on the GPU machine: no TensorFlow
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("gpu_fps", os.path.join(sys.argv[1], "bench", "gpu_fps.py"))
gpu_fps = importlib.util.module_from_spec(spec); spec.loader.exec_module(gpu_fps)
gpu_fps.setup_backend(tiny=True)
import keras, numpy as np
# every module the benchmark imports, TensorFlow-free
import bench.streams, eval.curves, eval.metrics, eval.runtime, rl_scheduler, rl_scheduler.schedulers  # noqa
import deeplab_face.models.segmenter, deeplab_face.models.multiscale, flownet2s.model, flownet2s.dff  # noqa
from rl_scheduler import build_policy
keras.utils.set_random_seed(0)
policy = build_policy([1, 1, 8])
x = np.random.default_rng(0).normal(size=(1, 1, 1, 8)).astype("float32")
e = np.array([[0.1, 0.2]], np.float32)
fn = gpu_fps.compile_fn(lambda d, f: policy([d, f], training=False), [policy])
got = np.asarray(gpu_fps.block(fn(gpu_fps.on_device(x), gpu_fps.on_device(e))))
np.testing.assert_allclose(got, np.asarray(policy([x, e])), rtol=1e-5, atol=1e-6)
ms = gpu_fps.time_ms(fn, (x, e), warmup=1, runs=2, fetch=True)
assert ms > 0 and "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok", keras.backend.backend(), gpu_fps.device_name())
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_jax_path_compiles_without_tensorflow():
    proc = subprocess.run([sys.executable, "-c", _JAX_CHILD, ROOT], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("ok jax")
