"""The RL key scheduler (paper §3.2) and the baselines it is compared with (§4.2).

Exports `build_policy`, `load_policy` and `load_dvsnet`. Importing this package
does not import TensorFlow (the policy is backend-neutral Keras 3).
"""
import json
import os

from rl_scheduler.dvsnet_decision import build_decision_network
from rl_scheduler.policy import build_policy, expert_weights

__all__ = ["build_policy", "build_decision_network", "expert_weights", "load_policy", "load_dvsnet"]

# Keys of a stage's config.json that are arguments of the build function.
_POLICY_BUILD_ARGS = ("deviation_shape", "activation", "deviation_size")
_DVSNET_BUILD_ARGS = ("deviation_shape", "deviation_size")


def _load(stage_dir, builder, build_args):
    from deeplab_face.errors import CheckpointError  # deeplab_face's package may import TensorFlow

    config_path = os.path.join(stage_dir, "config.json")
    weights_path = os.path.join(stage_dir, "final.weights.h5")
    for path in (config_path, weights_path):
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: missing (train the stage first)")
    try:
        with open(config_path) as f:
            stage_config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_path}: unreadable ({e})") from None
    kwargs = {k: stage_config[k] for k in build_args if stage_config.get(k) is not None}
    if "deviation_shape" not in kwargs:
        raise CheckpointError(f"{config_path}: no deviation_shape")
    model = builder(**kwargs)
    try:
        model.load_weights(weights_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: does not fit the model in config.json ({e})") from None
    model.deviation_tap = stage_config.get("deviation_tap", "conv6_1")
    model.stage_config = stage_config
    return model


def load_policy(stage_dir):
    """The policy network of an `rl_scheduler.train` stage (config.json + final.weights.h5)."""
    return _load(stage_dir, build_policy, _POLICY_BUILD_ARGS)


def load_dvsnet(stage_dir):
    """The DVSNet decision network of an `rl_scheduler.train_dvsnet` stage."""
    return _load(stage_dir, build_decision_network, _DVSNET_BUILD_ARGS)
