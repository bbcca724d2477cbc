"""One tiny prepared face set (2 synthetic videos x 8 frames, S = 65), shared by the tests."""
import pytest


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """Prepared-data directory (manifest.json + one TFRecord per video) and its video ids."""
    from deeplab_face.make_synthetic import make_synthetic
    from deeplab_face.prepare_300vw import prepare
    root = tmp_path_factory.mktemp("tiny_face")
    make_synthetic(str(root / "raw"), videos=2, frames=8, size=128, seed=0, demo_clip=False)
    manifest = prepare(str(root / "raw"), str(root / "prepared"), size=65)
    return str(root / "prepared"), sorted(manifest["videos"])
