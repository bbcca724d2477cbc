"""Model-zoo import (issue 14): the zoo's head variants, multi_grid, the "backbone" import mode.

TF1 checkpoints are written as test_checkpoint.py writes them; the head's names and shapes come
from HEAD_TABLE below, written out from TF DeepLab's model.py scopes independently of the
project's name map, so each variant is checked against TF DeepLab rather than against itself.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from deeplab_face import build_segmenter, load_segmenter
from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.checkpoint import load_tf1_checkpoint, tf1_variable_map
from deeplab_face.stage import finish_stage
from tests.deeplab_face.test_checkpoint import (random_arrays, write_recorded_graph,
                                                write_tf1_checkpoint)
from tests.deeplab_face.test_models import randomize_weights

BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _conv_bn(shapes, scope, kernel, cin, cout):
    shapes[f"{scope}/weights"] = (kernel, kernel, cin, cout)
    shapes.update({f"{scope}/BatchNorm/{v}": (cout,) for v in BN})


def _separable(shapes, scope, cin, cout):  # model.py split_separable_conv2d
    shapes[f"{scope}_depthwise/depthwise_weights"] = (3, 3, cin, 1)
    shapes.update({f"{scope}_depthwise/BatchNorm/{v}": (cin,) for v in BN})
    _conv_bn(shapes, f"{scope}_pointwise", 1, cin, cout)


def zoo_head_shapes(features, low_level, classes, rates=3, decoder=True, aspp_bn=True,
                    separable=True):
    """{name: shape} of model.py's head: extract_features' ASPP, refine_by_decoder,
    get_branch_logits (one logits conv per rate when ASPP has no batch norm)."""
    shapes = {}
    if aspp_bn:
        _conv_bn(shapes, "image_pooling", 1, features, 256)
        _conv_bn(shapes, "aspp0", 1, features, 256)
        for i in range(1, rates + 1):
            if separable:
                _separable(shapes, f"aspp{i}", features, 256)
            else:
                _conv_bn(shapes, f"aspp{i}", 3, features, 256)
        _conv_bn(shapes, "concat_projection", 1, 256 * (2 + rates), 256)
    depth = 256 if aspp_bn else features
    if decoder:
        _conv_bn(shapes, "decoder/feature_projection0", 1, low_level, 48)
        if separable:
            _separable(shapes, "decoder/decoder_conv0", depth + 48, 256)
            _separable(shapes, "decoder/decoder_conv1", 256, 256)
        else:  # slim.repeat(2, conv2d, 256, 3, scope="decoder_conv0")
            _conv_bn(shapes, "decoder/decoder_conv0/decoder_conv0_1", 3, depth + 48, 256)
            _conv_bn(shapes, "decoder/decoder_conv0/decoder_conv0_2", 3, 256, 256)
        depth = 256
    for i in range(1 if aspp_bn or not rates else rates):
        scope = "logits/semantic" + (f"_{i}" if i else "")
        shapes[f"{scope}/weights"] = (1, 1, depth, classes)
        shapes[f"{scope}/biases"] = (classes,)
    return shapes


# variant -> (build_segmenter head options, zoo_head_shapes options, the deeplab_face.train
#             flags that the refusal of its checkpoint by today's full head suggests)
HEAD_TABLE = {
    # model_zoo.md: MobileNet-V2 PASCAL / Cityscapes, "ASPP N/A, decoder N/A"
    "no_aspp": (dict(atrous_rates=[], decoder_output_stride=None), dict(rates=0, decoder=False),
                "--atrous_rates= --decoder_output_stride=none"),
    # model_zoo.md: MobileNet-V2 ADE20K, "ASPP N/A, decoder OS = 4"
    "decoder_only": (dict(atrous_rates=[]), dict(rates=0), "--atrous_rates="),
    "full": ({}, {}, None),  # Xception-65 zoo checkpoints and the paper's N
    "plain_convs": (dict(aspp_with_separable_conv=False, decoder_use_separable_conv=False),
                    dict(separable=False),
                    "--aspp_with_separable_conv=false --decoder_use_separable_conv=false"),
    "aspp_without_bn": (dict(aspp_with_batch_norm=False), dict(aspp_bn=False),
                        "--aspp_with_batch_norm=false"),
}
MOBILENET = ("mobilenet_v2", 320, 144)  # backbone, trunk channels, decoder's low-level channels


def _frames(size=65):
    return np.random.default_rng(3).uniform(0, 255, (1, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def full_head():
    """The 21-class MobileNet-V2 with today's full head, built once for the tests that read its names or
    check that a checkpoint is refused without a weight of it changing (each checks that itself)."""
    return build_segmenter("mobilenet_v2", 21, 65)


@pytest.fixture(scope="module")
def zoo_checkpoints(tmp_path_factory, full_head):
    """{variant: (prefix, arrays)}: one 21-class MobileNet-V2 checkpoint per head variant."""
    root = tmp_path_factory.mktemp("zoo")
    trunk = {n: v for n, v in tf1_variable_map(full_head).items() if n.startswith("MobilenetV2/")}
    checkpoints = {}
    for seed, (variant, (_, table, _)) in enumerate(HEAD_TABLE.items()):
        shapes = {**trunk, **zoo_head_shapes(320, 144, 21, **table)}
        arrays = random_arrays(shapes, seed=seed)
        checkpoints[variant] = (write_tf1_checkpoint(root / variant / "model.ckpt", arrays), arrays)
    return checkpoints


@pytest.mark.parametrize("variant", sorted(HEAD_TABLE))
def test_head_variant_has_the_zoo_names_and_loads_into_its_config(variant, zoo_checkpoints):
    options, table, _ = HEAD_TABLE[variant]
    model = build_segmenter("mobilenet_v2", 21, 65, **options)
    mapping = tf1_variable_map(model)
    head = {n: tuple(v.shape) for n, v in mapping.items() if not n.startswith("MobilenetV2/")}
    assert head == zoo_head_shapes(320, 144, 21, **table)
    prefix, arrays = zoo_checkpoints[variant]
    report = load_tf1_checkpoint(model, prefix)
    assert report["loaded"] == len(mapping) == len(arrays) and report["head"] == "loaded"
    for name, variable in mapping.items():
        np.testing.assert_array_equal(np.asarray(variable), arrays[name], err_msg=name)
    assert np.isfinite(np.asarray(model(_frames()))).all()


@pytest.mark.parametrize("variant", sorted(set(HEAD_TABLE) - {"full"}))
def test_mismatched_head_config_is_refused_naming_both(variant, zoo_checkpoints, full_head):
    options, _, flags = HEAD_TABLE[variant]
    full = full_head
    other = build_segmenter("mobilenet_v2", 21, 65, **options)
    for model, prefix, suggested in ((full, zoo_checkpoints[variant][0], flags),
                                     (other, zoo_checkpoints["full"][0], None)):
        before = np.asarray(tf1_variable_map(model)["MobilenetV2/Conv/weights"]).copy()
        with pytest.raises(CheckpointError) as error:
            load_tf1_checkpoint(model, prefix)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{prefix}: head configuration differs")
        checkpoint_side, model_side = message.split("; the model has ")
        for key in set(options) | {"atrous_rates"}:
            ours = model.segmenter_args[key]
            assert f"{key}=" in checkpoint_side and f"{key}={ours}" in model_side, key
        if suggested:  # the flags that build the checkpoint's head
            assert f"; build the model with {suggested} (" in message
        np.testing.assert_array_equal(  # nothing half-loaded
            np.asarray(tf1_variable_map(model)["MobilenetV2/Conv/weights"]), before)


def test_no_aspp_checkpoint_names_concat_projection_sizes(zoo_checkpoints, full_head):
    message = str(pytest.raises(CheckpointError, load_tf1_checkpoint, full_head,
                                zoo_checkpoints["no_aspp"][0]).value)
    assert "checkpoint has atrous_rates=[], " in message
    assert "concat_projection/weights [1, 1, 512, 256]" in message
    assert "atrous_rates=[6, 12, 18]" in message and "[1, 1, 1280, 256]" in message
    assert "--atrous_rates= --decoder_output_stride=none" in message


# --- the "backbone" import mode ------------------------------------------------------------------

@pytest.mark.parametrize("classes", [21, 5])
def test_backbone_mode_leaves_exactly_the_logits_untouched(classes, tmp_path):
    """Whatever the class count, every weight but `logits/...` comes from the checkpoint."""
    arrays = random_arrays(tf1_variable_map(build_segmenter("mobilenet_v2", classes, 65)), seed=9)
    prefix = write_tf1_checkpoint(tmp_path / "model.ckpt", arrays)
    model = randomize_weights(build_segmenter("mobilenet_v2", 5, 65))
    mapping = tf1_variable_map(model)
    before = {n: np.asarray(v).copy() for n, v in mapping.items()}
    report = load_tf1_checkpoint(model, prefix, mode="backbone")
    logits = sorted(n for n in mapping if n.startswith("logits/"))
    assert logits == ["logits/semantic/biases", "logits/semantic/weights"]
    assert report["reinitialised"] == logits and report["loaded"] == len(mapping) - 2
    head = len([n for n in mapping if not n.startswith(("MobilenetV2/", "logits/"))])
    assert report["head"] == f"{head} of {head} head weights restored, logits not"
    for name, variable in mapping.items():
        expected = before[name] if name in logits else arrays[name]
        np.testing.assert_array_equal(np.asarray(variable), expected, err_msg=name)


def test_backbone_mode_trunk_only_and_partial_head(zoo_checkpoints):
    model = build_segmenter("mobilenet_v2", 5, 65)
    mapping = tf1_variable_map(model)
    trunk = {n for n in mapping if n.startswith("MobilenetV2/")}
    prefix, arrays = zoo_checkpoints["full"]
    before = {n: np.asarray(v).copy() for n, v in mapping.items()}
    report = load_tf1_checkpoint(model, prefix, mode="backbone", restore_head=False)
    assert report["head"] == "not restored (trunk only)" and report["loaded"] == len(trunk)
    assert report["reinitialised"] == sorted(set(mapping) - trunk)
    for name in set(mapping) - trunk:
        np.testing.assert_array_equal(np.asarray(mapping[name]), before[name], err_msg=name)
    # The zoo's no-ASPP head into the full head: image_pooling and aspp0 match by name and
    # shape; the atrous branches, concat_projection (512 != 1280 inputs), the decoder and the
    # logits stay as initialised, and the report names both heads.
    prefix, arrays = zoo_checkpoints["no_aspp"]
    report = load_tf1_checkpoint(model, prefix, mode="backbone")
    restored = {n for n in mapping if n.startswith(("image_pooling/", "aspp0/"))}
    assert report["loaded"] == len(trunk) + len(restored) == len(trunk) + 10
    assert "concat_projection/weights" in report["reinitialised"]
    assert "aspp3_pointwise/weights" in report["reinitialised"]
    assert report["head_differences"].startswith("checkpoint: atrous_rates=[], ")
    assert "model: atrous_rates=[6, 12, 18], decoder_output_stride=4" in report["head_differences"]
    for name in restored:
        np.testing.assert_array_equal(np.asarray(mapping[name]), arrays[name], err_msg=name)


def test_unknown_import_mode_is_a_config_error():
    model = build_segmenter("mobilenet_v2", 5, 65)
    with pytest.raises(ConfigError, match="import mode 'logits'"):
        load_tf1_checkpoint(model, "unused", mode="logits")


# --- multi_grid and atrous rates recorded by a saved graph --------------------------------------

RESNET_BLOCK4 = tuple(f"resnet_v1_50/block4/unit_{u}/bottleneck_v1/conv2" for u in (1, 2, 3))
RESNET_PROBE = "resnet_v1_50/block3/unit_6/bottleneck_v1/conv2"


def _resnet_graph(multi_grid, output_stride=16):
    """block4's dilations as TF DeepLab builds them: 32 / output_stride x each unit rate."""
    base = 32 // output_stride
    layers = {RESNET_PROBE: (base // 2, 1, None)}
    layers.update({s: (base * m, 1, False) for s, m in zip(RESNET_BLOCK4, multi_grid)})
    return layers


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory):
    """A resnet_v1_50_beta ImageNet-style (trunk-only) checkpoint, graph files written per test."""
    model = build_segmenter("resnet_v1_50_beta", 5, 65)
    arrays = random_arrays({n: v for n, v in tf1_variable_map(model).items()
                            if n.startswith("resnet_v1_50/")}, seed=4)
    return write_tf1_checkpoint(tmp_path_factory.mktemp("resnet") / "model.ckpt", arrays)


@pytest.fixture(scope="module")
def resnets():
    return {grid: build_segmenter("resnet_v1_50_beta", 5, 65, multi_grid=grid)
            for grid in ((1, 2, 4), (1, 1, 1))}


def test_multi_grid_recorded_in_the_meta_graph_must_match(resnet_checkpoint, resnets):
    prefix = resnet_checkpoint
    meta = prefix + ".meta"
    assert load_tf1_checkpoint(resnets[(1, 2, 4)], prefix)["unverified"] == {
        "multi_grid": [1, 2, 4]}  # no graph: said, not assumed silently
    try:
        write_recorded_graph(Path(meta), _resnet_graph((1, 2, 4)))
        report = load_tf1_checkpoint(resnets[(1, 2, 4)], prefix)
        assert report["recorded"] == dict(path=meta, output_stride=16, multi_grid=[1, 2, 4])
        assert report["unverified"] == {}
        # DeepLab's own default multi_grid (None -> 1, 1, 1): refused in both modes, both named
        write_recorded_graph(Path(meta), _resnet_graph((1, 1, 1)))
        for mode in ("all", "backbone"):
            with pytest.raises(CheckpointError) as error:
                load_tf1_checkpoint(resnets[(1, 2, 4)], prefix, mode=mode)
            assert str(error.value) == (
                f"{prefix}: multi_grid differs: {meta} records multi_grid=[1, 1, 1] (graph at "
                "output stride 16), the model has multi_grid=[1, 2, 4]; build the model with "
                "--multi_grid=1,1,1")
        report = load_tf1_checkpoint(resnets[(1, 1, 1)], prefix)
        assert report["recorded"]["multi_grid"] == [1, 1, 1]
    finally:
        if os.path.exists(meta):
            os.remove(meta)


def test_frozen_graph_at_output_stride_8_is_rescaled(resnet_checkpoint, resnets):
    """The zoo's frozen_inference_graph.pb runs at OS8: block4 dilations 4/8/16 are [1, 2, 4]."""
    frozen = os.path.join(os.path.dirname(resnet_checkpoint), "frozen_inference_graph.pb")
    try:
        write_recorded_graph(Path(frozen), _resnet_graph((1, 2, 4), output_stride=8), frozen=True)
        report = load_tf1_checkpoint(resnets[(1, 2, 4)], resnet_checkpoint)
        assert report["recorded"] == dict(path=frozen, output_stride=8, multi_grid=[1, 2, 4])
        with pytest.raises(CheckpointError, match=r"records multi_grid=\[1, 2, 4\] \(graph at "
                                                  r"output stride 8\), the model has "
                                                  r"multi_grid=\[1, 1, 1\]"):
            load_tf1_checkpoint(resnets[(1, 1, 1)], resnet_checkpoint)
    finally:
        os.remove(frozen)


def test_atrous_rates_recorded_in_a_graph_must_match(zoo_checkpoints, tmp_path):
    """MobileNet-V2 full head: a graph at OS8 with 12/24/36 is today's 6/12/18 at OS16; a graph
    at OS16 with 12/24/36 is another function."""
    prefix, arrays = zoo_checkpoints["full"]
    model = build_segmenter("mobilenet_v2", 21, 65)
    probe = "MobilenetV2/expanded_conv_13/depthwise"
    meta = tmp_path / "model.ckpt.meta"
    for name in (".index", ".data-00000-of-00001"):
        (tmp_path / f"model.ckpt{name}").write_bytes(open(prefix + name, "rb").read())
    aspp = {f"aspp{i}_depthwise": (rate, 1, True) for i, rate in enumerate((12, 24, 36), 1)}
    write_recorded_graph(meta, {probe: (2, 1, True), **aspp})  # OS8: layer_15 at rate 2
    report = load_tf1_checkpoint(model, str(tmp_path / "model.ckpt"))
    assert report["recorded"]["atrous_rates"] == [6, 12, 18] and report["unverified"] == {}
    write_recorded_graph(meta, {probe: (1, 1, True), **aspp})  # OS16
    with pytest.raises(CheckpointError, match=r"atrous_rates differs: .* records atrous_rates="
                                              r"\[12, 24, 36\] \(graph at output stride 16\), "
                                              r"the model has atrous_rates=\[6, 12, 18\]"):
        load_tf1_checkpoint(model, str(tmp_path / "model.ckpt"))


# --- the head options live in the segmenter's config ---------------------------------------------

def test_stage_reloads_into_the_same_head(tmp_path):
    model = randomize_weights(build_segmenter("mobilenet_v2", 5, 65, atrous_rates=[],
                                              decoder_output_stride=None))
    assert model.segmenter_args["atrous_rates"] == [] and tuple(model.feature_net.output.shape) == (
        None, 5, 5, 256)  # no decoder: the head ends at the output stride
    finish_stage(str(tmp_path / "stage"), model, model.segmenter_args)
    loaded = load_segmenter(str(tmp_path / "stage"))
    assert loaded.segmenter_args == model.segmenter_args
    np.testing.assert_allclose(np.asarray(loaded(_frames())), np.asarray(model(_frames())), atol=1e-6)
    # A config.json written before the head options existed is today's head.
    old = build_segmenter("mobilenet_v2", 5, 65)
    finish_stage(str(tmp_path / "old"), old, dict(backbone="mobilenet_v2", num_classes=5,
                                                  crop_size=65))
    assert load_segmenter(str(tmp_path / "old")).segmenter_args == old.segmenter_args
    assert old.segmenter_args["atrous_rates"] == [6, 12, 18]
    assert old.segmenter_args["decoder_output_stride"] == 4
