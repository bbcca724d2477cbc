"""Tiny prepared face data (2 synthetic videos x 10 frames, S = 65) and an N stage directory."""
import json

import pytest


@pytest.fixture(scope="session")
def flow_prepared(tmp_path_factory):
    """Prepared-data directory (manifest.json + one TFRecord per video) and its video ids."""
    from deeplab_face.make_synthetic import make_synthetic
    from deeplab_face.prepare_300vw import prepare
    root = tmp_path_factory.mktemp("flow_face")
    make_synthetic(str(root / "raw"), videos=2, frames=10, size=128, seed=0, demo_clip=False)
    manifest = prepare(str(root / "raw"), str(root / "prepared"), size=65)
    return str(root / "prepared"), sorted(manifest["videos"])


@pytest.fixture(scope="session")
def segmenter_stage(tmp_path_factory):
    """A finished (untrained, seeded) segmentation stage: config.json + final.weights.h5."""
    import keras

    from deeplab_face import build_segmenter
    root = tmp_path_factory.mktemp("segmenter")
    keras.utils.set_random_seed(0)
    model = build_segmenter("mobilenet_v2", 5, 65)
    model.save_weights(str(root / "final.weights.h5"))
    with open(root / "config.json", "w") as f:
        json.dump(model.segmenter_args, f)
    (root / "DONE").write_text("{}")
    return str(root)
