"""deeplab_face.train --strategy (issue 11): a mirrored step is the one-device step; a two-worker
multi_worker run on localhost trains, writes one stage (the chief's) and resumes after a worker is
killed; deeplab_face.distribute's flag errors and chief rule."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
import tensorflow as tf

from deeplab_face import distribute
from deeplab_face.errors import ConfigError
from tests.backend_parity import ROOT
from tests.deeplab_face.test_train import _latest_step
from tests.distribute_check import run_check

# Tolerances of the mirrored-vs-one-device comparison, relative to each tensor's largest magnitude.
# The two runs compute the same sums in another order (two half-batch sums then an all-reduce,
# instead of one batch sum): float32 rounding, ~1e-7 per operation, ~1e-6 after a deep network's
# backward pass (measured: at most 5e-6 of a tensor's magnitude, on the near-zero gradients of an
# untrained net's first layers; ~3e-7 on the others). 1e-5 leaves room for that and nothing else:
# a gradient scaled by the replica count, or one replica's gradient alone, is off by ~50-100 %.
EXACT_ORDER_TOLERANCE = 1e-5


def assert_same_step(entry, tolerance, weight_tolerance=None):
    """Same loss and, within `tolerance` of each tensor's magnitude, the same checkpoint tensors;
    `weight_tolerance` for the weights themselves (the model's and the optimizer's references)."""
    assert (entry["default"]["replicas"], entry["mirrored"]["replicas"]) == (1, 2)
    assert entry["default"]["step"] == entry["mirrored"]["step"] == 1
    for key in ("loss", "total_loss"):
        if key in entry["default"]:
            assert entry["mirrored"][key] == pytest.approx(entry["default"][key], rel=tolerance), key
    tensors = entry["tensors"]
    slots = [name for name in tensors if name.startswith("optimizer/")]
    assert slots and max(tensors[name][1] for name in slots) > 0, "no optimizer state to compare"
    for name, (difference, magnitude) in tensors.items():
        weight = name.startswith("model/") or "_trainable_variables" in name
        allowed = (weight_tolerance if weight and weight_tolerance else tolerance) * max(magnitude, 1e-12)
        assert difference <= allowed, (name, difference, magnitude)


def test_a_mirrored_step_is_the_one_device_step(tiny_prepared, tmp_path):
    """One SGD step at crop 65, global batch 2 (augmented): loss, weights and momentum (= -lr *
    gradient) of two replicas match one device fed the same global batch. Batch norm is frozen
    (inference mode): fine-tuned, Keras normalises each replica's half batch with its own
    statistics, which is not the one-device computation (deeplab_face.train's docstring)."""
    prepared, videos = tiny_prepared
    (frozen,) = run_check(tmp_path, [dict(stage="segmenter", args=[prepared, videos], kwargs=dict(
        backbone="mobilenet_v2", crop_size=65, steps=1, seed=1, learning_rate=0.1, checkpoint_every=0,
        batch_size=2, fine_tune_batch_norm=False))], timeout=600)
    assert_same_step(frozen, EXACT_ORDER_TOLERANCE)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(root, prepared, videos, steps, extra_env=None):
    """The same deeplab_face.train command on two localhost workers (TF_CONFIG), worker 0 the chief."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   **((extra_env or {}).get(index, {})))
        command = [sys.executable, "-m", "deeplab_face.train", f"--workdir={root}", "--strategy=multi_worker",
                   f"--prepared_dir={prepared}", f"--train_videos={videos[0]}", "--backbone=mobilenet_v2",
                   "--crop_size=65", "--batch_size=2", f"--steps={steps}", "--checkpoint_every=1",
                   "--noaugment", "--fine_tune_batch_norm=false"]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def finish(procs, timeout):
    """Waits for every process (killing all at the deadline); their (returncode, stdout, stderr)."""
    deadline = time.monotonic() + timeout
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            stdout, stderr = proc.communicate()
        out.append((proc.returncode, stdout, stderr))
    return out


def test_two_workers_train_and_resume_after_one_is_killed(tiny_prepared, tmp_path):
    prepared, videos = tiny_prepared
    root = str(tmp_path / "segmenter")
    # Worker 1 kills itself (SIGKILL, stage.kill_point) right after its second checkpoint save.
    procs = start_workers(root, prepared, videos, steps=1000,
                          extra_env={1: {"DFVS_KILL_AT": "worker_1/ckpt-2"}})
    deadline = time.monotonic() + 240
    while procs[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    while _latest_step(os.path.join(root, "ckpt")) < 2 and procs[0].poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)   # the chief, left alone, blocks in (or fails) its next step's all-reduce
    procs[0].send_signal(signal.SIGKILL)
    (_, _, chief_err), (killed_rc, _, worker_err) = finish(procs, 30)
    assert killed_rc == -signal.SIGKILL, worker_err[-3000:]
    saved = _latest_step(os.path.join(root, "ckpt"))
    assert saved == 2, chief_err[-3000:]
    assert not os.path.exists(os.path.join(root, "DONE"))

    (chief_rc, chief_out, chief_err), (worker_rc, worker_out, worker_err) = finish(
        start_workers(root, prepared, videos, steps=saved + 2), 240)
    assert chief_rc == 0, chief_err[-3000:]
    assert worker_rc == 0, worker_err[-3000:]
    chief, worker = (json.loads(out.strip().splitlines()[-1]) for out in (chief_out, worker_out))
    # Both restored the chief's checkpoint and went on from its step.
    assert chief["resumed_from_step"] == worker["resumed_from_step"] == saved
    assert chief["step"] == worker["step"] == saved + 2 and chief["loss"] == worker["loss"]
    for name in ("DONE", "config.json", "final.weights.h5", "hparams.json"):
        assert os.path.exists(os.path.join(root, name)), name
    assert _latest_step(os.path.join(root, "ckpt")) == saved + 2
    assert not os.path.exists(os.path.join(root, ".workers"))   # the worker's scratch is gone
    with open(os.path.join(root, "hparams.json")) as f:
        hparams = json.load(f)
    assert (hparams["strategy"], hparams["replicas"]) == ("multi_worker", 2)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--strategy=multi_worker: TF_CONFIG is not set"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ConfigError, match="--strategy=multi_worker: TF_CONFIG is not JSON"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ConfigError, match="--strategy='tpu'"):
        distribute.make_strategy("tpu")


def test_chief_rule_and_write_dir():
    def cluster(task_type, task_id, jobs):
        resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                         cluster_spec=lambda: tf.train.ClusterSpec(jobs))
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.is_chief(cluster("worker", 0, workers))
    assert not distribute.is_chief(cluster("worker", 1, workers))
    assert distribute.is_chief(cluster("chief", 0, dict(workers, chief=["c:1"])))
    assert not distribute.is_chief(cluster("worker", 0, dict(workers, chief=["c:1"])))
    assert distribute.write_dir("/w", cluster("worker", 0, workers)) == "/w"
    assert distribute.write_dir("/w", cluster("worker", 1, workers)) == "/w/.workers/worker_1"
