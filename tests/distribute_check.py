"""The subprocess half of the `--strategy=mirrored` tests (tests/*/test_distribute.py).

The CPU can be split into logical devices only before TensorFlow initialises, which pytest's
process has long done; so this runs in a process of its own: two logical CPU devices, then, per
case, one training step of a stage under the default strategy (one device) and under `mirrored`
(two replicas) from the same seed and global batch. It prints one JSON line: per case, both runs'
results and, for every tensor of the two final checkpoints (weights, optimizer slots, batch-norm
statistics, step), the largest absolute difference and the largest magnitude. The tests decide.

    python -m tests.distribute_check '{"out": DIR, "cases": [{"stage": ..., "args": [...],
                                                              "kwargs": {...}}, ...]}'
stage: segmenter (deeplab_face.train), flownet (flownet2s.train) or pretrain (flownet2s.pretrain).
`run_check` (for the tests) runs it and returns the report.
"""
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def compare_checkpoints(first, second):
    """{tensor name: [max |a - b|, max |a|]} over the tensors of two checkpoints (same names)."""
    import numpy as np
    import tensorflow as tf

    a, b = tf.train.load_checkpoint(first), tf.train.load_checkpoint(second)
    names = sorted(n for n in a.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n)
    missing = sorted(set(names) ^ {n for n in b.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n})
    if missing:
        raise SystemExit(f"the checkpoints hold different tensors: {missing[:5]}")
    out = {}
    for name in names:
        x, y = np.asarray(a.get_tensor(name), np.float64), np.asarray(b.get_tensor(name), np.float64)
        out[name] = [float(np.max(np.abs(x - y), initial=0.0)), float(np.max(np.abs(x), initial=0.0))]
    return out


def main(spec):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from deeplab_face import distribute
    from deeplab_face.train import train_eval as segmenter
    from flownet2s.pretrain import pretrain
    from flownet2s.train import train_eval as flownet

    stages = dict(segmenter=segmenter, flownet=flownet, pretrain=pretrain)
    # One strategy of each kind for all the cases: each new MirroredStrategy numbers its collectives from
    # the same keys, and a second one in this process would meet the first one's (other-shaped) all-reduces.
    strategies = {name: distribute.make_strategy(name) for name in ("default", "mirrored")}
    report = []
    for index, case in enumerate(spec["cases"]):
        run, entry = stages[case["stage"]], {}
        for name in ("default", "mirrored"):
            strategy = strategies[name]
            root = os.path.join(spec["out"], f"case{index}_{name}")
            started = time.perf_counter()
            entry[name] = dict(run(root, *case.get("args", ()), strategy=strategy, verbose=0,
                                   **case.get("kwargs", {})),
                               replicas=strategy.num_replicas_in_sync)
            entry[name]["wall_seconds"] = time.perf_counter() - started
        entry["tensors"] = compare_checkpoints(*(tf.train.latest_checkpoint(
            os.path.join(spec["out"], f"case{index}_{name}", "ckpt")) for name in ("default", "mirrored")))
        report.append(entry)
    print(json.dumps(report))


def run_check(out_dir, cases, timeout=300):
    """Runs this module on `cases` in a fresh process; its report (one entry per case)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, CUDA_VISIBLE_DEVICES="")
    spec = json.dumps({"out": str(out_dir), "cases": cases})
    proc = subprocess.run([sys.executable, "-m", "tests.distribute_check", spec], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
