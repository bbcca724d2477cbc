"""make_synthetic writes the listed videos longer (held-out test videos)."""
import pytest

from deeplab_face.data import vw300
from deeplab_face.errors import ConfigError
from deeplab_face.make_synthetic import make_synthetic


def test_long_videos_get_their_own_length(tmp_path):
    written = make_synthetic(str(tmp_path), videos=2, frames=3, size=48, demo_clip=False, long_videos=("002",),
                             long_frames=5)
    assert written == {"001": 3, "002": 5}
    assert sorted(vw300.list_videos(str(tmp_path))) == ["001", "002"]
    assert len(list((tmp_path / "002" / "annot").glob("*.pts"))) == 5
    with pytest.raises(ConfigError, match="long_frames"):
        make_synthetic(str(tmp_path / "x"), videos=1, frames=3, size=48, demo_clip=False, long_videos=("001",),
                       long_frames=0)
