"""motion_input="flow_change": the stage records its scale and the deployed scheduler reads it back."""
import json
import os

import numpy as np

from rl_scheduler import load_policy
from rl_scheduler.probe import policy_probe
from rl_scheduler.schedulers import make_scheduler, policy_history_options
from rl_scheduler.policy_training import train_policy
from tests.rl_scheduler.toy_env import ToyVideoCache


def test_motion_input_stage_round_trip(tmp_path):
    caches = [ToyVideoCache(60, motion_rate=0.4, seed=s) for s in range(2)]
    root = str(tmp_path / "rl")
    train_policy(root, caches, [], episodes=4, episode_length=15, trials=4, episodes_per_update=2, window=10,
                 kar_limit=0.2, checkpoint_every=1, validate_every=2, validation_episodes=1,
                 motion_input="flow_change", verbose=0)
    stage = json.load(open(os.path.join(root, "config.json")))
    assert stage["expert_size"] == 3 and stage["training"]["motion_input"] == "flow_change"
    scale = stage["training"]["motion_scale"]
    changes = [c.pair(k, k + g).flow_magnitude - c.pair(k, k + 1).flow_magnitude
               for c in caches for k in range(0, 40, 3) for g in (1, 5, 9)]
    assert 0 < scale < 1e6 and np.isfinite(scale) and np.std(changes) > 0
    policy = load_policy(root)
    scheduler = make_scheduler("rl", policy=policy, threshold=0.5)
    pair = caches[0].pair(0, 1)
    obs = dict(conv6=pair.conv6, conv6_1=pair.conv6_1, flow_magnitude=0.3, frame_index=0)
    scheduler.decide(obs)
    scheduler.record(True)
    assert 0.0 <= scheduler.decide(dict(obs, frame_index=1))[1] <= 1.0
    probe = policy_probe(policy, caches, policy_history_options(policy), "conv6_1", 0.2, samples=8, max_gap=10)
    assert len(probe["p_key_by_motion"]) == len(probe["motion_change"]) == 5
