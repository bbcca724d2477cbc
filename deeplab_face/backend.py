"""The backend rules every package shares: how a hot call is compiled, how a result reaches numpy,
what the device is called.

Keras is imported on use, so that importing a caller (eval.sweeps, eval.report) stays free of
TensorFlow until a model actually runs.
"""
import platform

import numpy as np


def compile_fn(fn, jit_compile=False):
    """`fn` as one compiled call under the TensorFlow backend, the plain function elsewhere.

    `tf.function(reduce_retracing=True)`: the callers see a few batch sizes (short last batches,
    padded batches, 1..4 regions), which would otherwise trace once each. `jit_compile` asks for
    XLA, which only some bodies gain from (flownet2s.dff measures its warp; the conv nets lose).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)
    return fn


def to_numpy(x):
    """A tensor of any backend (or an array) as a numpy array on the host."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def device_name():
    """The first GPU's name under TensorFlow, else the CPU's (for results that carry their FPS)."""
    try:
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    except Exception:  # no TensorFlow device query available: fall back to the CPU name
        pass
    return platform.processor() or platform.machine()
