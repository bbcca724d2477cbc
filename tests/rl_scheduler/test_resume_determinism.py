"""Issue 9, resume determinism: the RL policy (with a state sample, whose RNG runs across updates) and
the DVSNet decision network (dropout) killed after a checkpoint resume to the uninterrupted run."""
import json
import os

import numpy as np
import pytest

from rl_scheduler import load_dvsnet, load_policy
from rl_scheduler.policy_training import train_policy
from rl_scheduler.dvsnet_training import train_decision_network
from tests.deeplab_face.test_resume_determinism import Killed, kill_at
from tests.rl_scheduler.test_train import TOY
from tests.rl_scheduler.test_train_dvsnet import _face_like_pairs
from tests.rl_scheduler.toy_env import ToyVideoCache


def _history(root):
    return json.load(open(os.path.join(root, "history.json")))


def test_killed_policy_training_resumes_to_the_same_policy(tmp_path, monkeypatch):
    caches = [ToyVideoCache(60, seed=s) for s in range(2)]
    options = dict(TOY, episodes=8, checkpoint_every=1, validate_every=2, state_sample=12)
    train_policy(str(tmp_path / "straight"), caches, [], **options)
    kill_at(monkeypatch, "killed/ckpt-2")
    with pytest.raises(Killed):
        train_policy(str(tmp_path / "killed"), caches, [], **options)
    monkeypatch.undo()
    train_policy(str(tmp_path / "killed"), caches, [], **options)
    assert _history(str(tmp_path / "killed")) == _history(str(tmp_path / "straight"))
    for a, b in zip(load_policy(str(tmp_path / "straight")).get_weights(),
                    load_policy(str(tmp_path / "killed")).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_killed_dvsnet_training_resumes_to_the_same_network(tmp_path, monkeypatch):
    x, y = _face_like_pairs(120, seed=5)
    data = dict(train_data=(x[:100], y[:100]), val_data=(x[100:], y[100:]), epochs=3, checkpoint_every=1,
                verbose=0)
    train_decision_network(str(tmp_path / "straight"), **data)
    kill_at(monkeypatch, "killed/ckpt-1")
    with pytest.raises(Killed):
        train_decision_network(str(tmp_path / "killed"), **data)
    monkeypatch.undo()
    train_decision_network(str(tmp_path / "killed"), **data)
    assert _history(str(tmp_path / "killed")) == _history(str(tmp_path / "straight"))
    for a, b in zip(load_dvsnet(str(tmp_path / "straight")).get_weights(),
                    load_dvsnet(str(tmp_path / "killed")).get_weights()):
        np.testing.assert_array_equal(a, b)
