"""TF1 checkpoint import: model-zoo names and shapes, values arrive, readable mismatch errors."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face import build_segmenter
from deeplab_face.errors import CheckpointError
from deeplab_face.models.checkpoint import load_tf1_checkpoint, tf1_variable_map
from tests.deeplab_face.test_models import randomize_weights

# Names and shapes from TF DeepLab checkpoints (reference/deeplab.md, model.py, 21 classes).
ZOO_NAMES = {
    "xception_65": {
        "xception_65/entry_flow/conv1_1/weights": [3, 3, 3, 32],
        "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/BatchNorm/gamma": [64],
        "xception_65/entry_flow/block1/unit_1/xception_module/shortcut/weights": [1, 1, 64, 128],
        "xception_65/middle_flow/block1/unit_16/xception_module/separable_conv3_pointwise/weights": [1, 1, 728, 728],
        "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/BatchNorm/moving_variance": [2048],
        "image_pooling/weights": [1, 1, 2048, 256],
        "aspp0/BatchNorm/beta": [256],
        "aspp1_depthwise/depthwise_weights": [3, 3, 2048, 1],
        "aspp3_pointwise/weights": [1, 1, 2048, 256],
        "concat_projection/weights": [1, 1, 1280, 256],
        "decoder/feature_projection0/weights": [1, 1, 256, 48],
        "decoder/decoder_conv0_depthwise/depthwise_weights": [3, 3, 304, 1],
        "decoder/decoder_conv1_pointwise/BatchNorm/moving_mean": [256],
        "logits/semantic/weights": [1, 1, 256, 21],
        "logits/semantic/biases": [21],
    },
    "resnet_v1_50_beta": {
        "resnet_v1_50/conv1_1/weights": [3, 3, 3, 64],
        "resnet_v1_50/conv1_3/BatchNorm/gamma": [128],
        "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights": [1, 1, 128, 256],
        "resnet_v1_50/block3/unit_6/bottleneck_v1/conv2/BatchNorm/beta": [256],
        "resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/weights": [1, 1, 512, 2048],
    },
    "mobilenet_v2": {
        "MobilenetV2/Conv/weights": [3, 3, 3, 32],
        "MobilenetV2/expanded_conv/depthwise/depthwise_weights": [3, 3, 32, 1],
        "MobilenetV2/expanded_conv_1/expand/weights": [1, 1, 16, 96],
        "MobilenetV2/expanded_conv_16/project/weights": [1, 1, 960, 320],
        "decoder/feature_projection0/weights": [1, 1, 144, 48],
    },
}


@pytest.mark.parametrize("backbone", sorted(ZOO_NAMES))
def test_name_map_uses_model_zoo_names(backbone):
    model = build_segmenter(backbone, 21, 65)
    mapping = tf1_variable_map(model)
    assert len(mapping) == len(model.weights)  # every weight has exactly one TF name
    for name, shape in ZOO_NAMES[backbone].items():
        assert name in mapping, name
        assert list(mapping[name].shape) == shape, name
    assert not [n for n in mapping if "activation" in n or "kernel" in n]
    # the ImageNet classifier is not built
    assert not [n for n in mapping if n.startswith(("MobilenetV2/Conv_1", "resnet_v1_50/logits"))]


def write_tf1_checkpoint(prefix, arrays, optimizer_slots=(), v1=False):
    """A TF1 Saver checkpoint (graph mode) holding `arrays`, a global_step and Momentum slots.

    v1=True writes the old single-file format of slim's 2016 ImageNet checkpoints (vgg_16.ckpt).
    """
    graph = tf.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            tf.compat.v1.Variable(value, name=name)
        for name in optimizer_slots:
            tf.compat.v1.Variable(np.zeros_like(arrays[name]), name=name + "/Momentum")
        tf.compat.v1.train.get_or_create_global_step()
        version = tf.compat.v1.train.SaverDef.V1 if v1 else tf.compat.v1.train.SaverDef.V2
        saver = tf.compat.v1.train.Saver(write_version=version)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix), write_meta_graph=False, write_state=not v1)


def write_recorded_graph(path, layers, frozen=False):
    """A graph as a TF1 Saver writes it beside a checkpoint (`<prefix>.meta`) or as the zoo's
    `frozen_inference_graph.pb` (frozen=True), with one convolution per layer scope.

    layers: {scope: (dilation, stride, depthwise)}. Dilated layers are written as slim writes
    them (tf.nn.convolution / depthwise_conv2d with a rate: SpaceToBatchND around the conv),
    except depthwise=None, a Conv2D with a `dilations` attribute; op names carry a training
    graph's `clone_0/` name scope in the .meta.
    """
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (1, 17, 17, 2), name="ImageTensor")
        kernel = tf.constant(np.ones((3, 3, 2, 2), np.float32))
        depthwise_kernel = tf.constant(np.ones((3, 3, 2, 1), np.float32))
        for scope, (dilation, stride, depthwise) in layers.items():
            with tf.compat.v1.name_scope(("" if frozen else "clone_0/") + scope + "/"):
                if depthwise:
                    tf.compat.v1.nn.depthwise_conv2d(x, depthwise_kernel, [1, stride, stride, 1],
                                                     "SAME", rate=[dilation, dilation])
                elif depthwise is None:
                    tf.compat.v1.nn.conv2d(x, kernel, [1, stride, stride, 1], "SAME",
                                           dilations=[1, dilation, dilation, 1])
                else:
                    tf.compat.v1.nn.convolution(x, kernel, "SAME", strides=[stride, stride],
                                                dilation_rate=[dilation, dilation])
    if frozen:
        tf.io.write_graph(graph.as_graph_def(), str(path.parent), path.name, as_text=False)
    else:
        tf.compat.v1.train.export_meta_graph(filename=str(path), graph_def=graph.as_graph_def(),
                                             graph=graph)
    return str(path)


def random_arrays(mapping, seed=0):
    """{name: random array} for {name: Keras variable or shape} (BN scales and variances > 0)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, variable in mapping.items():
        shape = tuple(getattr(variable, "shape", variable))
        if name.endswith("moving_variance") or name.endswith("gamma"):
            arrays[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            arrays[name] = (rng.normal(size=shape) * 0.2).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def model_65():
    return randomize_weights(build_segmenter("mobilenet_v2", 5, 65))


def _frames():
    return np.random.default_rng(3).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)


def test_values_arrive_and_outputs_change(tmp_path, model_65):
    mapping = tf1_variable_map(model_65)
    arrays = random_arrays(mapping)
    prefix = write_tf1_checkpoint(tmp_path / "model.ckpt", arrays,
                                  optimizer_slots=["concat_projection/weights"])
    before = np.asarray(model_65(_frames()))
    report = load_tf1_checkpoint(model_65, str(tmp_path))  # a directory works too
    assert report["loaded"] == len(mapping) and report["head"] == "loaded"
    assert report["checkpoint"] == prefix
    for name, variable in mapping.items():
        np.testing.assert_array_equal(np.asarray(variable), arrays[name], err_msg=name)
    assert np.abs(np.asarray(model_65(_frames())) - before).max() > 1e-3


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path, model_65):
    arrays = random_arrays(tf1_variable_map(model_65))
    del arrays["aspp2_pointwise/weights"], arrays["MobilenetV2/expanded_conv_3/expand/BatchNorm/beta"]
    arrays["aspp4_depthwise/depthwise_weights"] = np.zeros((3, 3, 320, 1), np.float32)
    arrays["concat_projection/weights"] = np.zeros((1, 1, 512, 256), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "bad.ckpt", arrays)
    before = [np.asarray(w).copy() for w in model_65.weights[:3]]
    with pytest.raises(CheckpointError) as error:
        load_tf1_checkpoint(model_65, prefix)
    message = str(error.value)
    assert "\n" not in message and message.startswith(prefix)
    assert "2 missing (MobilenetV2/expanded_conv_3/expand/BatchNorm/beta, aspp2_pointwise/weights)" in message
    assert "1 unexpected (aspp4_depthwise/depthwise_weights)" in message
    assert "1 mis-shaped (concat_projection/weights [1, 1, 512, 256]!=[1, 1, 1280, 256])" in message
    for old, w in zip(before, model_65.weights[:3]):  # nothing half-loaded
        np.testing.assert_array_equal(np.asarray(w), old)


def test_21_class_checkpoint_needs_backbone_mode(tmp_path, model_65):
    arrays = random_arrays(tf1_variable_map(build_segmenter("mobilenet_v2", 21, 65)))
    prefix = write_tf1_checkpoint(tmp_path / "pascal.ckpt", arrays)
    with pytest.raises(CheckpointError, match=r"2 mis-shaped \(logits/semantic/biases .*"
                                              r"mode='backbone' .*--initialize_last_layer=false"):
        load_tf1_checkpoint(model_65, prefix)
    logits = model_65.task_net.get_layer("logits__semantic")
    kept = [w.copy() for w in logits.get_weights()]
    report = load_tf1_checkpoint(model_65, prefix, mode="backbone")
    assert report["reinitialised"] == ["logits/semantic/biases", "logits/semantic/weights"]
    assert report["skipped"] == ["logits/semantic/biases", "logits/semantic/weights"]
    for old, new in zip(kept, logits.get_weights()):
        np.testing.assert_array_equal(old, new)
    decoder = model_65.feature_net.get_layer("decoder__decoder_conv1_pointwise")
    np.testing.assert_array_equal(decoder.get_weights()[0], arrays["decoder/decoder_conv1_pointwise/weights"])


def test_imagenet_backbone_only_checkpoint(tmp_path, model_65):
    mapping = tf1_variable_map(model_65)
    arrays = {n: a for n, a in random_arrays(mapping, seed=5).items() if n.startswith("MobilenetV2/")}
    # the slim ImageNet classifier, which DeepLab does not build
    arrays["MobilenetV2/Conv_1/weights"] = np.zeros((1, 1, 320, 1280), np.float32)
    arrays["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, 1280, 1001), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "mobilenet_v2_1.0_224.ckpt", arrays)
    head_before = np.asarray(mapping["aspp0/weights"]).copy()
    report = load_tf1_checkpoint(model_65, prefix)
    assert report["head"] == "not loaded: backbone-only checkpoint"
    assert "aspp0/weights" in report["reinitialised"] and "logits/semantic/weights" in report["reinitialised"]
    np.testing.assert_array_equal(np.asarray(mapping["MobilenetV2/Conv/weights"]),
                                  arrays["MobilenetV2/Conv/weights"])
    np.testing.assert_array_equal(np.asarray(mapping["aspp0/weights"]), head_before)


def _one_line_error(call, *args, **kwargs):
    with pytest.raises(CheckpointError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unreadable_checkpoint_names_the_path(tmp_path, model_65):
    missing = str(tmp_path / "nothing.ckpt")
    assert _one_line_error(load_tf1_checkpoint, model_65, missing) == (
        f"{missing}: not a readable TF1 checkpoint (no such file, directory or checkpoint prefix)")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    message = _one_line_error(load_tf1_checkpoint, model_65, str(text))
    assert message.startswith(f"{text}: not a readable TF1 checkpoint (")
    assert message.count(str(text)) == 1  # TF's own copy of the path is dropped
    keras_weights = str(tmp_path / "stage.weights.h5")
    model_65.save_weights(keras_weights)
    message = _one_line_error(load_tf1_checkpoint, model_65, keras_weights)
    assert message.startswith(f"{keras_weights}: not a readable TF1 checkpoint (")
    assert "load_segmenter" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _one_line_error(load_tf1_checkpoint, model_65, str(empty)) == (f"{empty}: expected one "
        "TF1 checkpoint in this directory (*.index or *.ckpt), found 0 (none)")


def test_directory_with_two_checkpoints_and_tf2_checkpoints_are_refused(tmp_path, model_65):
    arrays = {"MobilenetV2/Conv/weights": np.zeros((3, 3, 3, 32), np.float32)}
    (tmp_path / "two").mkdir()
    for name in ("a.ckpt", "b.ckpt"):
        write_tf1_checkpoint(tmp_path / "two" / name, arrays, v1=True)
    assert _one_line_error(load_tf1_checkpoint, model_65, str(tmp_path / "two")).endswith(
        "found 2 (a.ckpt, b.ckpt)")
    # A training run's ckpt/ (tf.train.Checkpoint) is not a TF1 Saver checkpoint.
    tf2_checkpoint = tf.train.Checkpoint(v=tf.Variable(np.zeros(3, np.float32)))
    tf2_prefix = tf2_checkpoint.save(str(tmp_path / "tf2" / "ckpt"))
    message = _one_line_error(load_tf1_checkpoint, model_65, str(tmp_path / "tf2"))
    assert message.startswith(f"{tf2_prefix}: a TF2 object-based checkpoint")


def test_a_file_of_the_checkpoint_names_its_prefix(tmp_path, model_65):
    mapping = tf1_variable_map(model_65)
    prefix = write_tf1_checkpoint(tmp_path / "model.ckpt", random_arrays(mapping, seed=7))
    for path in (prefix + ".index", prefix + ".data-00000-of-00001"):
        assert load_tf1_checkpoint(model_65, path)["checkpoint"] == prefix


# --- Table 1's VGG16 rows and slim's ImageNet vgg_16.ckpt ---------------------------------------

# slim nets/vgg.py vgg_16: slim.repeat(net, repeats, conv2d, filters, [3, 3], scope=block), then
# fc6 (7x7, 4096) / fc7 (1x1, 4096) / fc8 (1x1, 1000) as convolutions; written out independently of
# deeplab_face.models.vgg so that the map is checked against slim, not against itself.
SLIM_VGG_16_BLOCKS = (("conv1", 2, 64), ("conv2", 2, 128), ("conv3", 3, 256), ("conv4", 3, 512),
                      ("conv5", 3, 512))
SLIM_FC = {"vgg_16/fc6/weights": (7, 7, 512, 4096), "vgg_16/fc6/biases": (4096,),
           "vgg_16/fc7/weights": (1, 1, 4096, 4096), "vgg_16/fc7/biases": (4096,)}
SLIM_FC8 = {"vgg_16/fc8/weights": (1, 1, 4096, 1000), "vgg_16/fc8/biases": (1000,)}
SLIM_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # vgg_16/mean_rgb


def slim_conv_shapes():
    shapes, channels = {}, 3
    for block, repeats, filters in SLIM_VGG_16_BLOCKS:
        for unit in range(1, repeats + 1):
            shapes[f"vgg_16/{block}/{block}_{unit}/weights"] = (3, 3, channels, filters)
            shapes[f"vgg_16/{block}/{block}_{unit}/biases"] = (filters,)
            channels = filters
    return shapes


@pytest.fixture(scope="module")
def slim_conv_checkpoint(tmp_path_factory):
    """slim's vgg_16.ckpt at real shapes (V1 single file) minus fc6/fc7 (~19M parameters).

    Returns (path, {name: array}) for the conv1..conv5 arrays.
    """
    rng = np.random.default_rng(11)
    convs = {n: (rng.normal(size=s) * 0.05).astype(np.float32)
             for n, s in slim_conv_shapes().items()}
    extra = {n: np.zeros(s, np.float32) for n, s in SLIM_FC8.items()}
    extra["vgg_16/mean_rgb"] = SLIM_MEAN_RGB
    path = write_tf1_checkpoint(tmp_path_factory.mktemp("slim") / "vgg_16.ckpt",
                                {**convs, **extra}, v1=True)
    return path, convs


@pytest.fixture(scope="module")
def fcn8s():
    return build_segmenter("fcn8s_vgg16", 5, 65)


def test_vgg_name_maps_are_slim_vgg_16(fcn8s):
    conv_shapes = slim_conv_shapes()
    assert sum(int(np.prod(s)) for s in conv_shapes.values()) == 14_714_688  # VGG16 conv1..conv5
    fcn_map = {n: tuple(v.shape) for n, v in tf1_variable_map(fcn8s).items()
               if n.startswith("vgg_16/")}
    assert fcn_map == {**conv_shapes, **SLIM_FC}  # exactly slim's names and shapes, fc6/fc7 included
    deeplab_v2 = build_segmenter("deeplab_v2_vgg16", 5, 65)
    v2_map = {n: tuple(v.shape) for n, v in tf1_variable_map(deeplab_v2).items()}
    assert {n: s for n, s in v2_map.items() if n.startswith("vgg_16/")} == conv_shapes
    # ASPP-L's fc6_i / fc7_i live outside the slim scope and cannot take ImageNet's fc6/fc7.
    assert v2_map["fc6_1/weights"] == (3, 3, 512, 1024) != SLIM_FC["vgg_16/fc6/weights"]
    assert v2_map["fc7_4/weights"] == (1, 1, 1024, 1024) != SLIM_FC["vgg_16/fc7/weights"]


def test_deeplab_v2_loads_slim_convs_and_skips_imagenet_fc(slim_conv_checkpoint):
    path, convs = slim_conv_checkpoint
    model = build_segmenter("deeplab_v2_vgg16", 5, 65)
    mapping = tf1_variable_map(model)
    fc6_before = np.asarray(mapping["fc6_1/weights"]).copy()
    before = np.asarray(model(_frames()))
    report = load_tf1_checkpoint(model, str(path))
    assert report["loaded"] == 26 and report["head"] == "not loaded: backbone-only checkpoint"
    assert report["skipped"] == sorted([*SLIM_FC8, "vgg_16/mean_rgb"])
    assert "fc6_1/weights" in report["reinitialised"] and "fc8_4/biases" in report["reinitialised"]
    assert "ASPP-L" in report["note"] and "[7, 7, 512, 4096]" in report["note"]
    for name, value in convs.items():
        np.testing.assert_array_equal(np.asarray(mapping[name]), value, err_msg=name)
    np.testing.assert_array_equal(np.asarray(mapping["fc6_1/weights"]), fc6_before)
    assert np.abs(np.asarray(model(_frames())) - before).max() > 1e-4


def test_fcn8s_needs_fc6_fc7_and_lists_them(slim_conv_checkpoint, fcn8s):
    """A user fine-tuning FCN-8s from slim's vgg_16.ckpt wants fc6/fc7 too: a conv-only
    checkpoint is refused (naming exactly what is missing) instead of half-initialising FCN."""
    path, _ = slim_conv_checkpoint
    conv1_1 = tf1_variable_map(fcn8s)["vgg_16/conv1/conv1_1/weights"]
    before = np.asarray(conv1_1).copy()
    message = _one_line_error(load_tf1_checkpoint, fcn8s, str(path))
    assert message.startswith(f"{path}: does not match the fcn8s_vgg16 model: 4 missing "
                              "(vgg_16/fc6/biases, vgg_16/fc6/weights, vgg_16/fc7/biases, "
                              "vgg_16/fc7/weights); FCN-8s loads")
    assert "unexpected" not in message and "mean_rgb" not in message  # fc8, mean_rgb: skipped
    np.testing.assert_array_equal(np.asarray(conv1_1), before)  # nothing half-loaded


def test_fcn8s_loads_fc6_fc7_as_convolutions(slim_conv_checkpoint, tmp_path, monkeypatch):
    """The full import, with fc6/fc7 narrowed to 64 channels so the checkpoint stays small."""
    from deeplab_face.models import vgg
    monkeypatch.setattr(vgg, "FCN_FC_FILTERS", 64)
    model = build_segmenter("fcn8s_vgg16", 5, 65)
    _, convs = slim_conv_checkpoint
    rng = np.random.default_rng(12)
    narrow = {"vgg_16/fc6/weights": (7, 7, 512, 64), "vgg_16/fc6/biases": (64,),
              "vgg_16/fc7/weights": (1, 1, 64, 64), "vgg_16/fc7/biases": (64,)}
    fc = {n: rng.normal(size=s).astype(np.float32) for n, s in narrow.items()}
    extra = {"vgg_16/fc8/weights": np.zeros((1, 1, 64, 1000), np.float32),
             "vgg_16/mean_rgb": SLIM_MEAN_RGB}
    prefix = write_tf1_checkpoint(tmp_path / "vgg_16_narrow.ckpt", {**convs, **fc, **extra})
    report = load_tf1_checkpoint(model, prefix)
    assert report["loaded"] == 30 and report["skipped"] == ["vgg_16/fc8/weights", "vgg_16/mean_rgb"]
    assert "score_fr/weights" in report["reinitialised"] and "fc8" in report["note"]
    mapping = tf1_variable_map(model)
    for name, value in {**convs, **fc}.items():
        np.testing.assert_array_equal(np.asarray(mapping[name]), value, err_msg=name)
