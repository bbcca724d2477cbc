"""Issue 9, resume determinism: a segmenter training killed right after a checkpoint and run again ends
bit-identical to an uninterrupted one (the data stream continues at the step, augmentation included), and
logs only the steps after its checkpoint. A real SIGKILL of a training process is tests/deeplab_face/
test_distribute.py's (a worker of a two-process run) and tests/eval/test_reproduce.py's (F's fine-tuning)."""
import os

import numpy as np
import pytest

from deeplab_face import stage
from deeplab_face.train import train_eval
from tests.deeplab_face.test_train import scalar_events


class Killed(BaseException):
    """Stands for kill -9: nothing after the kill point runs."""


def kill_at(monkeypatch, point):
    def kill_point(name):
        if name == point:
            raise Killed(name)
    monkeypatch.setattr(stage, "kill_point", kill_point)


def weights(root):
    from deeplab_face import load_segmenter
    return load_segmenter(root).get_weights()


def test_killed_segmenter_training_resumes_bit_identically(tiny_prepared, tmp_path, monkeypatch):
    prepared, videos = tiny_prepared
    options = dict(backbone="mobilenet_v2", crop_size=65, batch_size=2, steps=4, checkpoint_every=2,
                   seed=3, augment=True, verbose=0)   # augmentation: per-example seeds must line up too
    straight = train_eval(str(tmp_path / "straight"), prepared, videos, **options)
    kill_at(monkeypatch, "killed/ckpt-2")
    with pytest.raises(Killed):
        train_eval(str(tmp_path / "killed"), prepared, videos, **options)
    assert not os.path.exists(tmp_path / "killed" / "DONE")
    monkeypatch.undo()
    resumed = train_eval(str(tmp_path / "killed"), prepared, videos, **options)
    assert resumed["resumed_from_step"] == 2 and resumed["loss"] == straight["loss"]
    for a, b in zip(weights(str(tmp_path / "straight")), weights(str(tmp_path / "killed"))):
        np.testing.assert_array_equal(a, b)
    # the resumed run logged only the steps after the checkpoint, in an event file of its own
    assert sorted(scalar_events(str(tmp_path / "killed" / "tensorboard"), "loss")[-1]) == [3, 4]
