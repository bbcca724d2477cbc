"""Segmentation network N (DeepLab-V3+ and the Table 1 baselines), face data, commands.

`build_segmenter` and `load_segmenter` are imported lazily (module __getattr__) so that
`import deeplab_face.data.pts` does not import Keras.
"""

__all__ = ["build_segmenter", "load_segmenter"]


def __getattr__(name):
    if name in __all__:
        from deeplab_face.models import segmenter
        return getattr(segmenter, name)
    raise AttributeError(f"module 'deeplab_face' has no attribute {name!r}")
