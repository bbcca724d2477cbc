"""The DeepLab-V3+ backbones, one table keyed by name (TF DeepLab feature_extractor.py style).

Each entry: the trunk builder `fn(images_in_[-1,1], output_stride, bn, multi_grid) ->
(features, endpoints)`, its checkpoint scope, its BN (Keras momentum = TF decay, epsilon), the
low-level endpoint fed to the decoder (stride 4; taken before the unit's ReLU/add where DeepLab
does) and its channels, the trunk's output channels, the scopes of the ImageNet classifier that
DeepLab does not build (present in TF-slim ImageNet checkpoints, ignored on import), and the
default `multi_grid` (None: the trunk has no multi-grid block; feature_extractor.py passes
multi_grid to the ResNet and Xception trunks only).
"""
import collections

from deeplab_face.models.mobilenet import mobilenet_v2
from deeplab_face.models.resnet import resnet_v1_50_beta
from deeplab_face.models.xception import xception_65

Backbone = collections.namedtuple(
    "Backbone", "builder scope bn low_level_endpoint low_level_channels feature_channels "
    "classifier_scopes multi_grid")

BACKBONES = {
    "xception_65": Backbone(
        builder=xception_65, scope="xception_65", bn=(0.9997, 1e-3),
        low_level_endpoint="entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
        low_level_channels=256, feature_channels=2048,
        classifier_scopes=("xception_65/logits",),
        # xception.py: exit_flow/block2 unit_rate_list = multi_grid, None -> [1, 1, 1]
        multi_grid=(1, 1, 1)),
    "resnet_v1_50_beta": Backbone(
        builder=resnet_v1_50_beta, scope="resnet_v1_50", bn=(0.95, 1e-5),
        low_level_endpoint="block1/unit_2/bottleneck_v1/conv3",
        low_level_channels=256, feature_channels=2048,
        classifier_scopes=("resnet_v1_50/logits",),
        # common.py: "Set multi_grid = [1, 2, 4] when using provided 'resnet_v1_{50,101}_beta'
        # checkpoints" (resnet_v1_beta.py's own None means [1, 1, 1]).
        multi_grid=(1, 2, 4)),
    "mobilenet_v2": Backbone(
        # depthwise_output is after the depthwise BN and ReLU6 (slim ops.expanded_conv)
        builder=mobilenet_v2, scope="MobilenetV2", bn=(0.997, 1e-3),
        low_level_endpoint="layer_4/depthwise_output",
        low_level_channels=144, feature_channels=320,
        classifier_scopes=("MobilenetV2/Conv_1", "MobilenetV2/Logits"),
        multi_grid=None),
}

# ASPP and decoder BN (model.py: decay 0.9997, epsilon 1e-5)
HEAD_BN = (0.9997, 1e-5)
