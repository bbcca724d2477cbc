"""Every segmentation network N, one record per name in one table (TF DeepLab feature_extractor.py style).

A `Backbone` record holds all that the project keys by the name: how to build N, its Table 1 row
(display name, single-scale), its TF1 checkpoint import (trunk scope, scopes never loaded, the
report's note, the hint on missing names) and, for the DeepLab-V3+ networks, the trunk (`Trunk`).

A `Trunk` is a DeepLab-V3+ feature extractor: the builder `fn(images_in_[-1,1], output_stride,
bn, multi_grid) -> (features, endpoints)`, its BN (Keras momentum = TF decay, epsilon), the
low-level endpoint fed to the decoder (stride 4; taken before the unit's ReLU/add where DeepLab
does) and its channels, the trunk's output channels, and the default `multi_grid` (None: the
trunk has no multi-grid block; feature_extractor.py passes multi_grid to the ResNet and Xception
trunks only). Only these networks take the head options (deeplab_v3plus.HEAD_OPTIONS).

The scopes never loaded are the ImageNet classifier that DeepLab does not build (present in
TF-slim ImageNet checkpoints) and, for VGG16, slim's `mean_rgb` constant and any ImageNet layer
whose shape the segmenter does not share.
"""
import dataclasses
from typing import Callable, Optional

from deeplab_face.models import deeplab_fast, vgg
from deeplab_face.models.mobilenet import mobilenet_v2
from deeplab_face.models.resnet import resnet_v1_50_beta
from deeplab_face.models.xception import xception_65


@dataclasses.dataclass(frozen=True)
class Trunk:
    """A DeepLab-V3+ trunk (module docstring)."""
    builder: Callable
    bn: tuple
    low_level_endpoint: str
    low_level_channels: int
    feature_channels: int
    multi_grid: Optional[tuple]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One network N (module docstring).

    build: `fn(num_classes, crop_size, output_stride, split, **head) -> (feature_net, task_net)`.
    display_name: its Table 1 row (None: the name itself).
    scope: the trunk's checkpoint scope (None: no "backbone" import mode).
    skipped_scopes: checkpoint scopes never loaded.
    single_scale: Table 1's "N/A" rows, evaluated at scale 1.0 only.
    """
    name: str
    build: Callable
    display_name: Optional[str] = None
    scope: Optional[str] = None
    skipped_scopes: tuple = ()
    single_scale: bool = False
    trunk: Optional[Trunk] = None
    import_note: Optional[str] = None
    missing_hint: Optional[str] = None

    def __post_init__(self):
        if self.display_name is None:
            object.__setattr__(self, "display_name", self.name)  # frozen: set once, here


def _deeplab_v3plus(name):
    """build_deeplab_v3plus for trunk `name`, imported on use: deeplab_v3plus imports this table."""
    def build(*args, **head):
        from deeplab_face.models.deeplab_v3plus import build_deeplab_v3plus
        return build_deeplab_v3plus(name, *args, **head)
    build.__name__ = f"build_deeplab_v3plus_{name}"
    return build


# slim's vgg_16.ckpt: `mean_rgb` [3] is the ILSVRC mean (vgg.VGG_MEAN_RGB here, a constant, not a
# weight); fc8 is the 1000-class ImageNet classifier. FCN-8s loads fc6/fc7 (same shapes as slim's 7x7
# fc6 and 1x1 fc7); DeepLab-V2's 1024-channel 3x3 fc6_i / 1x1 fc7_i do not match them and start from
# scratch.
_SLIM_SKIPPED = (f"{vgg.SCOPE}/fc8", f"{vgg.SCOPE}/mean_rgb")

BACKBONES = {b.name: b for b in (
    Backbone(
        "xception_65", _deeplab_v3plus("xception_65"), "DeepLab-V3+ (Xception-65)",
        scope="xception_65", skipped_scopes=("xception_65/logits",),
        trunk=Trunk(
            builder=xception_65, bn=(0.9997, 1e-3),
            low_level_endpoint="entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
            low_level_channels=256, feature_channels=2048,
            # xception.py: exit_flow/block2 unit_rate_list = multi_grid, None -> [1, 1, 1]
            multi_grid=(1, 1, 1))),
    Backbone(
        "resnet_v1_50_beta", _deeplab_v3plus("resnet_v1_50_beta"), "DeepLab-V3+ (ResNet-50)",
        scope="resnet_v1_50", skipped_scopes=("resnet_v1_50/logits",),
        trunk=Trunk(
            builder=resnet_v1_50_beta, bn=(0.95, 1e-5),
            low_level_endpoint="block1/unit_2/bottleneck_v1/conv3",
            low_level_channels=256, feature_channels=2048,
            # common.py: "Set multi_grid = [1, 2, 4] when using provided 'resnet_v1_{50,101}_beta'
            # checkpoints" (resnet_v1_beta.py's own None means [1, 1, 1]).
            multi_grid=(1, 2, 4))),
    Backbone(
        "mobilenet_v2", _deeplab_v3plus("mobilenet_v2"), "DeepLab-V3+ (MobileNet-V2)",
        scope="MobilenetV2", skipped_scopes=("MobilenetV2/Conv_1", "MobilenetV2/Logits"),
        trunk=Trunk(
            # depthwise_output is after the depthwise BN and ReLU6 (slim ops.expanded_conv)
            builder=mobilenet_v2, bn=(0.997, 1e-3),
            low_level_endpoint="layer_4/depthwise_output",
            low_level_channels=144, feature_channels=320,
            multi_grid=None)),
    Backbone(
        "fcn8s_vgg16", vgg.build_fcn8s_vgg16, "FCN (VGG16)", single_scale=True,
        scope=vgg.SCOPE, skipped_scopes=_SLIM_SKIPPED,
        import_note="ImageNet fc6/fc7 loaded as convolutions; fc8 (1000 classes) not loaded",
        missing_hint="FCN-8s loads conv1_1..conv5_3 and fc6/fc7 of slim's full vgg_16.ckpt"),
    Backbone(
        "deeplab_v2_vgg16", vgg.build_deeplab_v2_vgg16, "DeepLab-V2 (VGG16)", single_scale=True,
        scope=vgg.SCOPE, skipped_scopes=(f"{vgg.SCOPE}/fc6", f"{vgg.SCOPE}/fc7") + _SLIM_SKIPPED,
        import_note=f"ImageNet fc6/fc7/fc8 not loaded: ASPP-L fc6_i [3, 3, 512, {vgg.ASPP_L_FILTERS}] / "
                    f"fc7_i [1, 1, {vgg.ASPP_L_FILTERS}, {vgg.ASPP_L_FILTERS}] differ from slim's fc6 "
                    f"[7, 7, 512, {vgg.FCN_FC_FILTERS}] / fc7 [1, 1, {vgg.FCN_FC_FILTERS}, {vgg.FCN_FC_FILTERS}]",
        missing_hint="DeepLab-V2 loads conv1_1..conv5_3 of slim's vgg_16.ckpt"),
    # DVSNet's Cityscapes segmentation net, for its released weights (dvsnet_checkpoint.py).
    Backbone("deeplab_fast_resnet101", deeplab_fast.build_deeplab_fast),
)}
BACKBONE_NAMES = tuple(BACKBONES)
DEEPLAB_V3PLUS = tuple(name for name, b in BACKBONES.items() if b.trunk is not None)

# ASPP and decoder BN (model.py: decay 0.9997, epsilon 1e-5)
HEAD_BN = (0.9997, 1e-5)
