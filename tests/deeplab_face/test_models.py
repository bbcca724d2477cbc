"""DeepLab-V3+ shapes and parameter counts against TF DeepLab's published architectures."""
import numpy as np
import pytest

from deeplab_face import build_segmenter
from deeplab_face.errors import ConfigError
from deeplab_face.models.backbones import BACKBONES, DEEPLAB_V3PLUS

DEEPLAB_BACKBONES = sorted(DEEPLAB_V3PLUS)


def randomize_weights(model, seed=0):
    """He-scaled random kernels, random BN scale/offset, BN statistics calibrated on a batch.

    Freshly initialised depthwise kernels (Glorot over 9*C) shrink the signal to ~1e-12
    through an untrained network in inference mode; setting every BN's moving statistics
    to its input's statistics on one random batch keeps activations O(1) so tests can
    see whether outputs depend on inputs and weights.
    """
    import keras
    rng = np.random.default_rng(seed)
    norms = []
    for layer in model.feature_net.layers + model.task_net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            norms.append(layer)
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.path.split("/")[-1]
            if name == "kernel" or name == "depthwise_kernel":
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                fan_in = np.prod(shape[:2]) * (1 if depthwise else shape[2])
                values.append(rng.normal(0, np.sqrt(2.0 / fan_in), shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name == "moving_variance":
                values.append(np.ones(shape))
            else:
                values.append(rng.normal(0, 0.1, shape))
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0  # moving statistics := this batch's statistics
    height, width = model.input.shape[1:3]
    batch = np.random.default_rng(seed + 1).uniform(0, 255, (4, height, width, 3))
    model.feature_net(batch.astype(np.float32), training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
        # Near-constant channels would get gains of 1/sqrt(1e-5) and amplify rounding
        # noise; a floor keeps the random network well conditioned.
        gamma, beta, mean, variance = bn.get_weights()
        bn.set_weights([gamma, beta, mean, np.maximum(variance, 0.1)])
    return model


def _map_shape(model, layer_name):
    return tuple(model.feature_net.get_layer(layer_name).input.shape[1:])


@pytest.fixture(scope="module")
def built():
    """build_segmenter(backbone, classes, crop, output_stride, **head), built once per argument set for
    the tests here that only read a model's structure (shapes, layer settings, parameter counts) and
    never change its weights: one build costs 1-4 s, and several tests read the same default models."""
    models = {}

    def build(backbone, num_classes, crop, output_stride=16, **head):
        key = (backbone, num_classes, crop, output_stride, tuple(sorted(head.items())))
        if key not in models:
            models[key] = build_segmenter(backbone, num_classes, crop, output_stride=output_stride, **head)
        return models[key]

    yield build
    models.clear()


@pytest.mark.parametrize("backbone", DEEPLAB_BACKBONES)
@pytest.mark.parametrize("crop,output_stride", [(65, 16), (129, 16), (65, 8), (129, 8), (513, 16)])
def test_feature_map_shapes(backbone, crop, output_stride, built):
    model = built(backbone, 5, crop, output_stride=output_stride)
    grid = (crop - 1) // output_stride + 1  # 513 -> 33 at OS16
    fine = (crop - 1) // 4 + 1               # 513 -> 129
    spec = BACKBONES[backbone].trunk
    assert _map_shape(model, "aspp0") == (grid, grid, spec.feature_channels)
    assert _map_shape(model, "decoder__feature_projection0") == (fine, fine, spec.low_level_channels)
    assert tuple(model.feature_net.output.shape[1:]) == (fine, fine, 256)
    assert tuple(model.output.shape[1:]) == (crop, crop, 5)


@pytest.mark.parametrize("backbone", DEEPLAB_BACKBONES)
def test_runs_and_outputs_probabilities(backbone):
    model = randomize_weights(build_segmenter(backbone, 5, 65))
    x = np.random.default_rng(0).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 65, 65, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.abs(probs[0] - probs[1]).max() > 0  # the image matters


def _conv_bn(k, cin, cout):
    return k * k * cin * cout + 4 * cout


def _separable(cin, cout, k=3):
    return k * k * cin + 4 * cin + cin * cout + 4 * cout


def _head_count(feature_ch, low_ch, classes):
    """ASPP + decoder + logits as reference/deeplab.md's head table lists them."""
    return (2 * _conv_bn(1, feature_ch, 256) + 3 * _separable(feature_ch, 256)
            + _conv_bn(1, 1280, 256) + _conv_bn(1, low_ch, 48)
            + _separable(304, 256) + _separable(256, 256) + 256 * classes + classes)


def _resnet50_beta_count():
    """From the layer table: 3-conv root, bottlenecks 3/4/6/3, conv shortcut on each block's first unit."""
    total = _conv_bn(3, 3, 64) + _conv_bn(3, 64, 64) + _conv_bn(3, 64, 128)
    depth_in = 128
    for base, units in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for _ in range(units):
            total += _conv_bn(1, depth_in, base) + _conv_bn(3, base, base) + _conv_bn(1, base, 4 * base)
            if depth_in != 4 * base:
                total += _conv_bn(1, depth_in, 4 * base)
            depth_in = 4 * base
    return total


def _backbone_params(model, backbone):
    prefix = BACKBONES[backbone].scope + "__"
    return sum(layer.count_params() for layer in model.feature_net.layers
               if layer.name.startswith(prefix))


def test_parameter_counts_match_published_and_table_counts(built):
    # Keras's MobileNetV2(alpha=1, include_top=True) has 3,538,984 parameters (published);
    # minus the 1000-way classifier (1280*1000 + 1000) and Conv_1 (320*1280 + BN 4*1280),
    # which DeepLab does not build, leaves the trunk to layer_18.
    mobilenet = built("mobilenet_v2", 5, 65)
    assert _backbone_params(mobilenet, "mobilenet_v2") == 3_538_984 - 1_281_000 - 414_720
    assert mobilenet.count_params() == 1_843_264 + _head_count(320, 144, 5)
    resnet = built("resnet_v1_50_beta", 5, 65)
    assert _backbone_params(resnet, "resnet_v1_50_beta") == _resnet50_beta_count() == 23_685_312
    assert resnet.count_params() == 23_685_312 + _head_count(2048, 256, 5)
    # bonlime/keras-deeplab-v3-plus (TF names, Xception-65 DeepLab-V3+, 21 classes) reports
    # 41,258,213 parameters.
    xception = build_segmenter("xception_65", 21, 65)
    assert xception.count_params() == 41_258_213
    assert _backbone_params(xception, "xception_65") + _head_count(2048, 256, 21) == 41_258_213


def test_atrous_rates_double_at_output_stride_8(built):
    os16 = built("mobilenet_v2", 5, 65, output_stride=16).feature_net
    os8 = built("mobilenet_v2", 5, 65, output_stride=8).feature_net
    for i, rate in enumerate((6, 12, 18), 1):
        assert os16.get_layer(f"aspp{i}_depthwise").dilation_rate == (rate, rate)
        assert os8.get_layer(f"aspp{i}_depthwise").dilation_rate == (2 * rate, 2 * rate)
    # layer_15 (expanded_conv_13) loses its stride at OS16; layers 16-18 run at rate 2
    assert os16.get_layer("MobilenetV2__expanded_conv_13__depthwise").strides == (1, 1)
    assert os16.get_layer("MobilenetV2__expanded_conv_16__depthwise").dilation_rate == (2, 2)


def test_resnet_multi_grid_and_bn_settings(built):
    net = built("resnet_v1_50_beta", 5, 65).feature_net
    rates = [net.get_layer(f"resnet_v1_50__block4__unit_{u}__bottleneck_v1__conv2").dilation_rate[0]
             for u in (1, 2, 3)]
    assert rates == [2, 4, 8]
    bn = net.get_layer("resnet_v1_50__conv1_1__BatchNorm")
    assert (bn.momentum, bn.epsilon) == (0.95, 1e-5)
    head_bn = net.get_layer("aspp0__BatchNorm")
    assert (head_bn.momentum, head_bn.epsilon) == (0.9997, 1e-5)
    xception = built("xception_65", 5, 65).feature_net
    bn = xception.get_layer("xception_65__entry_flow__conv1_1__BatchNorm")
    assert (bn.momentum, bn.epsilon) == (0.9997, 1e-3)
    mobilenet = built("mobilenet_v2", 5, 65).feature_net
    bn = mobilenet.get_layer("MobilenetV2__Conv__BatchNorm")
    assert (bn.momentum, bn.epsilon) == (0.997, 1e-3)


def test_unknown_backbone_and_stride_raise_config_error():
    with pytest.raises(ConfigError, match="backbone"):
        build_segmenter("resnet_v1_101", 5, 65)
    with pytest.raises(ConfigError, match="output_stride"):
        build_segmenter("mobilenet_v2", 5, 65, output_stride=32)


def test_zoo_mobilenet_head_without_aspp_branches_or_decoder():
    """model_zoo.md's MobileNet-V2 PASCAL head: image pooling + aspp0 -> concat_projection
    (512 -> 256) -> logits at the output stride; ADE20K's adds the OS4 decoder."""
    pascal = build_segmenter("mobilenet_v2", 21, 65, atrous_rates=[], decoder_output_stride=None)
    head = 2 * _conv_bn(1, 320, 256) + _conv_bn(1, 512, 256) + 256 * 21 + 21
    assert pascal.count_params() == 1_843_264 + head
    assert tuple(pascal.feature_net.output.shape[1:]) == (5, 5, 256)
    assert tuple(pascal.output.shape[1:]) == (65, 65, 21)
    ade20k = build_segmenter("mobilenet_v2", 151, 65, atrous_rates=[])
    decoder = _conv_bn(1, 144, 48) + _separable(304, 256) + _separable(256, 256)
    assert ade20k.count_params() == 1_843_264 + head - 256 * 21 - 21 + decoder + 256 * 151 + 151


def test_multi_grid_sets_the_last_blocks_unit_rates(built):
    resnet = build_segmenter("resnet_v1_50_beta", 5, 65, multi_grid=[1, 1, 1]).feature_net
    rates = [resnet.get_layer(f"resnet_v1_50__block4__unit_{u}__bottleneck_v1__conv2")
             .dilation_rate[0] for u in (1, 2, 3)]
    assert rates == [2, 2, 2]  # DeepLab's own None: the function the issue-14 check saw differ
    for grid, expected in (((1, 1, 1), [2, 2, 2]), ((1, 2, 4), [2, 4, 8])):
        xception = build_segmenter("xception_65", 5, 65, multi_grid=grid).feature_net
        rates = [xception.get_layer("xception_65__exit_flow__block2__unit_1__xception_module__"
                                    f"separable_conv{i}_depthwise").dilation_rate[0]
                 for i in (1, 2, 3)]
        assert rates == expected
    assert built("xception_65", 5, 65).segmenter_args["multi_grid"] == [1, 1, 1]


def test_plain_conv_and_batch_norm_free_heads():
    plain = build_segmenter("mobilenet_v2", 5, 65, aspp_with_separable_conv=False,
                            decoder_use_separable_conv=False).feature_net
    assert plain.get_layer("aspp3").dilation_rate == (18, 18)
    assert plain.get_layer("aspp3").kernel_size == (3, 3)
    assert plain.get_layer("decoder__decoder_conv0__decoder_conv0_2").kernel_size == (3, 3)
    no_bn = build_segmenter("mobilenet_v2", 5, 65, aspp_with_batch_norm=False)
    # get_branch_logits: one 1x1 logits conv per atrous rate, summed; no ASPP module
    logits = [layer.name for layer in no_bn.task_net.layers if layer.name.startswith("logits")]
    assert logits == ["logits__semantic", "logits__semantic_1", "logits__semantic_2",
                      "logits__sum"]
    assert not [layer for layer in no_bn.feature_net.layers if layer.name.startswith("aspp")]
    x = np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(no_bn(x)).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backbone,options,flag", [
    ("mobilenet_v2", dict(multi_grid=[1, 2, 4]), "--multi_grid: mobilenet_v2 has no multi-grid"),
    ("resnet_v1_50_beta", dict(multi_grid=[1, 2]), "--multi_grid: \\[1, 2\\]: expected 3 positive"),
    ("mobilenet_v2", dict(decoder_output_stride=8), "--decoder_output_stride: 8 not supported"),
    ("mobilenet_v2", dict(atrous_rates=["6", "x"]), "--atrous_rates: .* not a list of integers"),
    ("mobilenet_v2", dict(aspp_with_batch_norm="yes"), "--aspp_with_batch_norm: 'yes' is not"),
    ("mobilenet_v2", dict(logits_kernel_size=3), "unknown \\['logits_kernel_size'\\]"),
    ("fcn8s_vgg16", dict(atrous_rates=[]), "--atrous_rates: fcn8s_vgg16 has a fixed head"),
])
def test_bad_head_options_are_config_errors(backbone, options, flag):
    with pytest.raises(ConfigError, match=flag):
        build_segmenter(backbone, 5, 65, **options)


def test_one_record_per_backbone():
    """backbones.BACKBONES is the one table keyed by the name (issue 10): build_segmenter's names,
    Table 1's names and single-scale rows, the checkpoint scopes, the DeepLab-V3+ trunks."""
    import dataclasses

    from deeplab_face.models.backbones import BACKBONE_NAMES
    assert BACKBONE_NAMES == ("xception_65", "resnet_v1_50_beta", "mobilenet_v2", "fcn8s_vgg16",
                              "deeplab_v2_vgg16", "deeplab_fast_resnet101")
    assert DEEPLAB_BACKBONES == ["mobilenet_v2", "resnet_v1_50_beta", "xception_65"]
    assert [n for n, b in BACKBONES.items() if b.single_scale] == ["fcn8s_vgg16", "deeplab_v2_vgg16"]
    assert BACKBONES["resnet_v1_50_beta"].display_name == "DeepLab-V3+ (ResNet-50)"
    fast = BACKBONES["deeplab_fast_resnet101"]
    assert fast.display_name == fast.name and fast.scope is None and fast.trunk is None
    assert BACKBONES["deeplab_v2_vgg16"].skipped_scopes == ("vgg_16/fc6", "vgg_16/fc7", "vgg_16/fc8",
                                                            "vgg_16/mean_rgb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        BACKBONES["mobilenet_v2"].scope = "other"
    with pytest.raises(ConfigError, match="head options apply to"):
        build_segmenter("fcn8s_vgg16", 5, 65, atrous_rates=[1])
