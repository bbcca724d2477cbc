"""Each DeepLab-V3+ model built under KERAS_BACKEND=numpy (TensorFlow blocked) matches TensorFlow."""
import numpy as np
import pytest

from deeplab_face import build_segmenter
from deeplab_face.models.backbones import DEEPLAB_V3PLUS
from tests.backend_parity import parity_outputs
from tests.deeplab_face.test_models import randomize_weights


def _unit_logits(model, x):
    """Scale the logits conv so the logits have std 0.25 (a non-saturated softmax).

    float32 convolutions differ between TF (oneDNN) and XLA by ~1e-6 relative each; a
    random BN network amplifies such rounding through its 50-100 layers to ~1e-4 relative
    at the logits (measured: it grows smoothly block by block, no single op differs), so
    saturated random logits of magnitude 15 would turn rounding into 1e-3 differences.
    """
    layer = model.task_net.get_layer("logits__semantic")
    kernel, bias = layer.get_weights()
    logits = np.asarray(model.logits_model(x, training=False))
    scale = 0.25 / max(float((logits - bias).std()), 1e-6)
    layer.set_weights([kernel * scale, bias * 0.0])


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """{backbone: (TensorFlow output, numpy-backend output)}, every backbone in one numpy-backend child."""
    models = {}
    for backbone in sorted(DEEPLAB_V3PLUS):
        kwargs = dict(backbone=backbone, num_classes=5, crop_size=65)
        model = randomize_weights(build_segmenter(**kwargs))
        x = np.random.default_rng(7).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
        _unit_logits(model, x)
        models[backbone] = ("deeplab_face:build_segmenter", kwargs, model, x)
    return parity_outputs(models, tmp_path_factory.mktemp("parity"))


@pytest.mark.parametrize("backbone", sorted(DEEPLAB_V3PLUS))
def test_numpy_backend_matches_tensorflow(backbone, parity_runs):
    expected, got = parity_runs[backbone]
    assert expected.std() > 2e-2  # a non-degenerate output, so the comparison means something
    np.testing.assert_allclose(got, expected, atol=1e-4)
