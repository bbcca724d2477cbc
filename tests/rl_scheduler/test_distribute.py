"""Issue 11 item 1 for the scheduler trainings: one REINFORCE update and one DVSNet step under
`--strategy=mirrored` (two logical CPU devices) equal the one-device update with the same data and seed.

Logical devices can only be configured before TensorFlow initialises, and pytest's process has
initialised it already: both checks run in one child process that configures two logical CPUs first
and writes their numbers to files this process compares.

Tolerances: the mirrored update differs from the one-device update only in the float32 summation
order (each replica sums its own states or samples, then the two partial sums are added), a relative
difference of the order of the number of terms times 6e-8, i.e. about 1e-5 at worst here. Losses are
compared at rtol 1e-5; weights at atol 1e-6: the RMSProp step (accumulator starting at 1) moves a
weight by about lr * g (lr 0.05 here) and Adam's first step by about lr * sign(g) (lr 1e-3), so a 1e-5
relative gradient difference moves a weight by 1e-8 or less, and each test checks that the update
moved the weights by far more than the tolerance (else a no-op would pass).
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

PRELUDE = """
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from deeplab_face.distribute import make_strategy
out = sys.argv[1]


def synced(variables):
    # every replica's copy of every variable holds the same value after the update
    return all(all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values)
               for v in variables if hasattr(v.value, "values"))
"""

REINFORCE = """
from rl_scheduler import build_policy
from rl_scheduler.environment import KeyEnvironment
from rl_scheduler.reinforce import Reinforce
from tests.rl_scheduler.toy_env import ToyVideoCache

report = {}
for name in ("default", "mirrored"):
    strategy = make_strategy(name)
    keras.utils.set_random_seed(3)
    env = KeyEnvironment([ToyVideoCache(60, seed=s) for s in range(2)], episode_length=15, trials=4,
                         window=10, kar_limit=0.5)
    with strategy.scope():
        # max_chunk 16: several rounds, and rounds where one replica has nothing left (all padding)
        agent = Reinforce(build_policy((2, 2, 4)), env, entropy_form="reciprocal", max_chunk=16,
                          learning_rate=0.05,
                          strategy=strategy)
        agent.optimizer.build(agent.policy.trainable_variables)
    before = agent.policy.get_weights()
    episodes = agent.collect(np.random.default_rng([3, 0, 0]), 3)   # 3 episodes: blocks of 2 and 1
    stats = agent.update(episodes)
    np.savez(os.path.join(out, name + ".npz"), *before, *agent.policy.get_weights())
    np.savez(os.path.join(out, name + "_actions.npz"), *[e.actions for e in episodes])
    report[name] = dict(loss=stats["loss"], replicas=strategy.num_replicas_in_sync,
                        synced=synced(agent.policy.trainable_variables),
                        states=int(sum((e.active if e.forced is None else e.active & ~e.forced).sum()
                                       for e in episodes)))
json.dump(report, open(os.path.join(out, "report.json"), "w"))
"""

DVSNET = """
from rl_scheduler import load_dvsnet
from rl_scheduler.dvsnet_decision import build_decision_network
from rl_scheduler.replicas import mse_step
from rl_scheduler.dvsnet_training import train_decision_network

rng = np.random.default_rng(0)
x = rng.normal(size=(39, 2, 2, 8)).astype(np.float32)
z = (0.5 * x[:, 0, 0, 0] - 0.2).astype(np.float32)
report = {}
for name in ("default", "mirrored"):
    strategy = make_strategy(name)
    keras.utils.set_random_seed(5)
    with strategy.scope():
        model = build_decision_network((2, 2, 8), dropout_rate=0.0, score_activation=False)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    before = model.get_weights()
    loss = float(mse_step(strategy, model, optimizer)(x[:31], z[:31]))   # 31: replicas get 16 and 15
    np.savez(os.path.join(out, name + ".npz"), *before, *model.get_weights())
    # the stage function end to end: one epoch of one global batch, the saved (folded) network
    root = os.path.join(out, "stage_" + name)
    train_decision_network(root, (x[:31], 80 + 10 * x[:31, 0, 0, 0]), (x[31:], 80 + 10 * x[31:, 0, 0, 0]),
                           epochs=1, batch_size=31, dropout_rate=0.0, verbose=0, strategy=name)
    np.savez(os.path.join(out, name + "_stage.npz"), *load_dvsnet(root).get_weights())
    report[name] = dict(loss=loss, replicas=strategy.num_replicas_in_sync, synced=synced(model.trainable_variables),
                        stage_loss=json.load(open(os.path.join(root, "history.json")))[0]["loss"],
                        stage_files=sorted(os.listdir(root)))
# with dropout each replica draws its own masks (seed offset by the replica id during the step, then
# restored): the seed states stay equal over the replicas and advance by one draw per dropout layer
from deeplab_face.stage import seed_states
strategy = make_strategy("mirrored")
with strategy.scope():
    model = build_decision_network((2, 2, 8), dropout_rate=0.5, score_activation=False)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
seeds = seed_states(model)
start = [s.numpy() for s in seeds]
report["dropout_loss"] = float(mse_step(strategy, model, optimizer, seeds)(x[:31], z[:31]))
report["dropout_seeds"] = dict(count=len(seeds), advance=[(s.numpy() - b).tolist() for s, b in zip(seeds, start)],
                               synced=all(all(np.array_equal(c.numpy(), s.values[0].numpy()) for c in s.values)
                                          for s in seeds))
# the stage function with DVSNet's dropout (0.5) under the strategy (no equality to check: masks differ)
train_decision_network(os.path.join(out, "dropout"), (x[:31], 80 + 10 * x[:31, 0, 0, 0]),
                       (x[31:], 80 + 10 * x[31:, 0, 0, 0]), epochs=2, batch_size=8, verbose=0, strategy="mirrored")
report["dropout_done"] = os.path.exists(os.path.join(out, "dropout", "DONE"))
json.dump(report, open(os.path.join(out, "report.json"), "w"))
"""


# Both checks in one child (one TensorFlow start-up): each script runs in a namespace of its own and
# writes into out/<name>.
CHILD = PRELUDE + """
base = out
for name, script in (("reinforce", REINFORCE), ("dvsnet", DVSNET)):
    out = os.path.join(base, name)
    os.makedirs(out)
    exec(compile(script, name, "exec"), dict(globals(), out=out))
"""


@pytest.fixture(scope="module")
def child_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               KERAS_BACKEND="tensorflow")
    script = f"REINFORCE = {REINFORCE!r}\nDVSNET = {DVSNET!r}\n" + CHILD
    done = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _run_child(child_out, name):
    out = child_out / name
    return out, json.load(open(out / "report.json"))


def _arrays(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _before_after(path):
    arrays = _arrays(path)
    half = len(arrays) // 2
    return arrays[:half], arrays[half:]


def _assert_same_update(out, report):
    assert report["default"]["replicas"] == 1 and report["mirrored"]["replicas"] == 2
    assert report["mirrored"]["synced"]
    np.testing.assert_allclose(report["mirrored"]["loss"], report["default"]["loss"], rtol=1e-5)
    (before_1, after_1), (before_2, after_2) = _before_after(out / "default.npz"), _before_after(out / "mirrored.npz")
    for a, b in zip(before_1, before_2):   # same seed, same initial weights
        np.testing.assert_array_equal(a, b)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(after_1, before_1))
    assert moved > 5e-4, moved                                   # the update is not a no-op
    # 1e-5, 2 % of the smallest update checked above: the two replicas' gradients are summed in another
    # order than one device's, and on a 2-core AMD EPYC 2 of 393,216 DVSNet weights then differed by 2.5e-6
    for a, b in zip(after_1, after_2):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_reinforce_update_under_mirrored_equals_one_device(child_out):
    tmp_path, report = _run_child(child_out, "reinforce")
    for a, b in zip(_arrays(tmp_path / "default_actions.npz"), _arrays(tmp_path / "mirrored_actions.npz")):
        np.testing.assert_array_equal(a, b)                      # the same episodes on both sides
    assert report["default"]["states"] > 3 * 16                  # several chunk rounds were needed
    _assert_same_update(tmp_path, report)


def test_dvsnet_step_under_mirrored_equals_one_device(child_out):
    tmp_path, report = _run_child(child_out, "dvsnet")
    _assert_same_update(tmp_path, report)
    np.testing.assert_allclose(report["mirrored"]["stage_loss"], report["default"]["stage_loss"], rtol=1e-5)
    for a, b in zip(_arrays(tmp_path / "default_stage.npz"), _arrays(tmp_path / "mirrored_stage.npz")):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)   # folded: scaled by the target std
    assert "DONE" in report["mirrored"]["stage_files"] and report["dropout_done"]
    seeds = report["dropout_seeds"]
    assert seeds["count"] == 3 and seeds["synced"] and np.isfinite(report["dropout_loss"])
    assert seeds["advance"] == [[0, 1]] * 3            # one draw each, the replica offsets undone
