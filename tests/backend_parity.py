"""Run a model under Keras's numpy backend, in a subprocess with TensorFlow blocked.

Proves two things at once (DESIGN.md: model code is backend-neutral Keras 3 and a
model module imports without TensorFlow): the builder imports and runs with
`import tensorflow` made impossible, and its outputs match the TensorFlow backend.
Keras's numpy backend runs convolutions through `jax.lax`, so jax (CPU) is a test
dependency.

Usage in a test (TensorFlow backend side):

    model = build_segmenter("mobilenet_v2", 5, 65)
    expected = model(x)
    got = numpy_backend_outputs("deeplab_face:build_segmenter",
                                dict(backbone="mobilenet_v2", num_classes=5, crop_size=65),
                                model, [x], tmp_path)
    np.testing.assert_allclose(got["output_0"], expected, atol=1e-4)
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CHILD = r"""
import importlib, json, os, sys
sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
os.environ["KERAS_BACKEND"] = "numpy"
import numpy as np
import keras
assert keras.backend.backend() == "numpy", keras.backend.backend()
for spec in json.loads(sys.argv[1]):   # one or more models, one after the other
    module_name, attr = spec["builder"].split(":")
    builder = importlib.import_module(module_name)
    for part in attr.split("."):
        builder = getattr(builder, part)
    model = builder(**spec["kwargs"])
    model.load_weights(spec["weights"])
    inputs = [np.load(p) for p in spec["inputs"]]
    out = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    if isinstance(out, dict):
        arrays = {k: np.asarray(v) for k, v in out.items()}
    elif isinstance(out, (list, tuple)):
        arrays = {f"output_{i}": np.asarray(v) for i, v in enumerate(out)}
    else:
        arrays = {"output_0": np.asarray(out)}
    np.savez(spec["out"], **arrays)
    del model, out, arrays
"""


def numpy_backend_outputs(builder, kwargs, model, inputs, tmp_path, timeout=600):
    """Build `builder(**kwargs)` under the numpy backend with `model`'s weights; run `inputs`.

    Args:
      builder: "package.module:function" returning a Keras model.
      kwargs: JSON-serialisable keyword arguments for the builder.
      model: the TensorFlow-backend model whose weights are transferred.
      inputs: list of numpy arrays (one per model input, in call order).
      tmp_path: a pytest tmp_path for the exchange files.

    Returns:
      dict name -> np.ndarray (dict outputs keep their keys; others are output_0, output_1, ...).
    """
    (outputs,) = numpy_backend_outputs_many([(builder, kwargs, model, inputs)], tmp_path, timeout)
    return outputs


def numpy_backend_outputs_many(cases, tmp_path, timeout=600):
    """`numpy_backend_outputs` for several (builder, kwargs, model, inputs) cases in one child process
    (one numpy-backend start-up, ~4 s of CPU, instead of one per case); the outputs per case, in order."""
    tmp_path = pathlib.Path(tmp_path)
    specs = []
    for index, (builder, kwargs, model, inputs) in enumerate(cases):
        weights = tmp_path / f"parity{index}.weights.h5"
        model.save_weights(str(weights))
        paths = []
        for i, x in enumerate(inputs):
            p = tmp_path / f"parity{index}_input_{i}.npy"
            np.save(p, np.asarray(x))
            paths.append(str(p))
        specs.append(dict(builder=builder, kwargs=kwargs, weights=str(weights), inputs=paths,
                          out=str(tmp_path / f"parity{index}_out.npz")))
    env = dict(os.environ, KERAS_BACKEND="numpy", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(specs)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"numpy-backend run failed:\n{proc.stderr[-4000:]}")
    results = []
    for spec in specs:
        with np.load(spec["out"], allow_pickle=False) as data:
            results.append({k: data[k] for k in data.files})
        os.remove(spec["weights"])   # up to 0.5 GB each (VGG16's fc6)
    return results


def parity_outputs(models, tmp_path, timeout=600):
    """{name: (TensorFlow-backend output, numpy-backend output)} for single-input, single-output models
    given as {name: (builder, kwargs, model, x)}; every numpy-backend run shares one child process."""
    expected = {name: np.asarray(model(x, training=False)) for name, (_, _, model, x) in models.items()}
    got = numpy_backend_outputs_many([(builder, kwargs, model, [x]) for builder, kwargs, model, x in models.values()],
                                     tmp_path, timeout)
    return {name: (expected[name], outputs["output_0"]) for name, outputs in zip(models, got)}
