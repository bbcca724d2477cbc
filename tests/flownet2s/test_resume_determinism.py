"""Issue 9, resume determinism: flow pretraining killed after a checkpoint resumes bit-identically
(the generated pair stream is replayed to the step)."""
import numpy as np
import pytest

from flownet2s import load_flownet
from flownet2s.pretrain import pretrain
from tests.deeplab_face.test_resume_determinism import Killed, kill_at


def test_killed_pretraining_resumes_bit_identically(tmp_path, monkeypatch):
    options = dict(input_size=64, steps=4, batch_size=2, checkpoint_every=2, val_pairs=2, face_pairs=0,
                   log=lambda line: None, verbose=0)
    straight = pretrain(str(tmp_path / "straight"), **options)
    kill_at(monkeypatch, "killed/ckpt-2")
    with pytest.raises(Killed):
        pretrain(str(tmp_path / "killed"), **options)
    monkeypatch.undo()
    resumed = pretrain(str(tmp_path / "killed"), **options)
    assert resumed["resumed_from_step"] == 2 and resumed["loss"] == straight["loss"]
    assert resumed["val_epe_after"] == straight["val_epe_after"]
    for a, b in zip(load_flownet(str(tmp_path / "straight")).get_weights(),
                    load_flownet(str(tmp_path / "killed")).get_weights()):
        np.testing.assert_array_equal(a, b)
