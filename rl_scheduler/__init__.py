"""The RL key scheduler (paper §3.2) and the baselines it is compared with (§4.2).

Exports `build_policy`, `load_policy` and `load_dvsnet`. Importing this package
does not import TensorFlow (the policy is backend-neutral Keras 3).
"""
import os

from deeplab_face.errors import CheckpointError
from deeplab_face.stage import load_stage_weights, read_stage_config
from rl_scheduler.dvsnet_decision import build_decision_network
from rl_scheduler.policy import build_policy, expert_weights

__all__ = ["build_policy", "build_decision_network", "expert_weights", "load_policy", "load_dvsnet"]

# Keys of a stage's config.json that are arguments of the build function.
_POLICY_BUILD_ARGS = ("deviation_shape", "activation", "deviation_size", "feature_norm",
                      "expert_size")
_DVSNET_BUILD_ARGS = ("deviation_shape", "deviation_size")


def _load(stage_dir, builder, build_args):
    stage_config = read_stage_config(stage_dir, "scheduler stage")
    kwargs = {k: stage_config[k] for k in build_args if stage_config.get(k) is not None}
    if "deviation_shape" not in kwargs:
        raise CheckpointError(f"{os.path.join(stage_dir, 'config.json')}: no deviation_shape")
    model = load_stage_weights(builder(**kwargs), stage_dir)
    model.deviation_tap = stage_config.get("deviation_tap", "conv6_1")
    model.stage_config = stage_config
    return model


def load_policy(stage_dir):
    """The policy network of an `rl_scheduler.train` stage (config.json + final.weights.h5)."""
    return _load(stage_dir, build_policy, _POLICY_BUILD_ARGS)


def load_dvsnet(stage_dir):
    """The DVSNet decision network of an `rl_scheduler.train_dvsnet` stage."""
    return _load(stage_dir, build_decision_network, _DVSNET_BUILD_ARGS)
