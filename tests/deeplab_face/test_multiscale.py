"""§4.2 multi-scale evaluation: softmax of resized logits averaged over scales and flips."""
import keras
import numpy as np
from keras import ops

from deeplab_face import build_segmenter
from deeplab_face.models.layers import resize_align_corners
from deeplab_face.models.multiscale import PAPER_SCALES, ScaledLogits, predict_multiscale
from tests.deeplab_face.test_models import randomize_weights


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_scales_resize_input_and_average_softmax_of_known_outputs():
    seen = []
    # Known model: at input height h it votes for class (h % 3) with logit 3, others 0.
    def model_fn(images):
        seen.append(tuple(images.shape[1:3]))
        h = int(images.shape[1])
        logits = np.zeros((images.shape[0], 17, 17, 3), np.float32)
        logits[..., h % 3] = 3.0
        return logits

    images = np.full((2, 65, 65, 3), 100.0, np.float32)
    probs = np.asarray(predict_multiscale(model_fn, images, scales=(1.0,) + PAPER_SCALES))
    assert seen == [(65, 65), (81, 81), (113, 113)]  # scale_dimension(65, s)
    expected = np.mean([_softmax(np.eye(3)[h % 3] * 3.0) for h in (65, 81, 113)], axis=0)
    assert probs.shape == (2, 65, 65, 3)
    np.testing.assert_allclose(probs, np.broadcast_to(expected, probs.shape), atol=1e-6)


def test_flip_mirrors_the_logits_back():
    # Known model: class-0 logit is a ramp over the column, whatever the image.
    def model_fn(images):
        w = int(images.shape[2])
        ramp = np.linspace(0.0, 4.0, w, dtype=np.float32)
        logits = np.zeros((images.shape[0], images.shape[1], w, 2), np.float32)
        logits[..., 0] = ramp
        return logits

    images = np.zeros((1, 9, 9, 3), np.float32)
    plain = np.asarray(predict_multiscale(model_fn, images))
    flipped = np.asarray(predict_multiscale(model_fn, images, flip=True))
    ramp = np.linspace(0.0, 4.0, 9)
    expected_plain = _softmax(np.stack([ramp, 0 * ramp], -1))
    np.testing.assert_allclose(plain[0, 0], expected_plain, atol=1e-6)
    expected_flip = (expected_plain + expected_plain[::-1]) / 2
    np.testing.assert_allclose(flipped[0, 3], expected_flip, atol=1e-6)
    np.testing.assert_allclose(flipped[0, :, ::-1], flipped[0], atol=1e-6)  # symmetric


def test_image_content_is_resized_align_corners():
    # Identity "model": logits = the image channels, so probabilities at scale s equal
    # softmax of the image resized down/up again; a linear ramp survives that exactly.
    def model_fn(images):
        return images

    ramp = np.linspace(0, 1, 65, dtype=np.float32)
    images = np.stack([np.broadcast_to(ramp, (65, 65))] * 3, -1)[None] * np.array([1, 2, 3], np.float32)
    probs = np.asarray(predict_multiscale(model_fn, images, scales=(1.0, 0.5, 1.75)))
    np.testing.assert_allclose(probs[0], _softmax(images[0]), atol=1e-5)


def test_scaled_logits_on_a_segmenter():
    model = randomize_weights(build_segmenter("mobilenet_v2", 3, 65))
    x = np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    model_fn = ScaledLogits(model)
    # scale 1.0 on the model's own size reproduces the model exactly
    np.testing.assert_allclose(predict_multiscale(model_fn, x), model(x), atol=1e-5)
    # scale 1.25 runs an 81-px copy with the same weights
    single = np.asarray(predict_multiscale(model_fn, x, scales=(1.25,)))
    copy = build_segmenter("mobilenet_v2", 3, 81)
    copy.set_weights(model.get_weights())
    resized = resize_align_corners(ops.convert_to_tensor(x), (81, 81))
    head = keras.Model(copy.task_net.input, copy.task_net.get_layer("upsample_logits").input)
    stride4_logits = head(copy.feature_net(resized))
    assert tuple(stride4_logits.shape) == (1, 21, 21, 3)  # TF resizes the stride-4 logits
    manual = ops.softmax(resize_align_corners(stride4_logits, (65, 65)), axis=-1)
    np.testing.assert_allclose(single, manual, atol=1e-5)
    assert np.abs(single - np.asarray(model(x))).max() > 1e-4  # another scale, another answer
    both = np.asarray(predict_multiscale(model_fn, x, scales=(1.0, 1.25)))
    np.testing.assert_allclose(both, (np.asarray(model(x)) + single) / 2, atol=1e-5)
    # weights follow the source model after sync()
    layer = model.task_net.get_layer("logits__semantic")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.array([0.0, 0.0, 8.0], np.float32)])
    stale = np.asarray(predict_multiscale(model_fn, x, scales=(1.25,)))
    np.testing.assert_allclose(stale, single, atol=1e-6)  # the cached copy until sync()
    model_fn.sync()
    moved = np.asarray(predict_multiscale(model_fn, x, scales=(1.25,)))
    assert moved[..., 2].mean() > single[..., 2].mean() + 0.1
