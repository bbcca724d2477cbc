"""The RL key scheduler's constants (paper §3.2, §4.2) and reconstructed options.

Each paper constant is defined once here; everything else imports it. The
reconstructed choices (`../shared/reference/paper.md`) are options whose defaults
live in `DEFAULT_OPTIONS`, with the accepted values in `OPTION_CHOICES`.
"""
# --- Paper constants (§3.2 "Network structure", §4.2 "Reinforcement learning settings").
HISTORY_WINDOW = 90              # H: expert information from the last 90 decisions
TRIALS = 32                      # M: trials per episode
EPISODE_LENGTH_300VW = 270       # T: 9 s at 30 FPS
EPISODE_LENGTH_CITYSCAPES = 30   # one snippet
GAMMA = 1.0                      # discount factor
ENTROPY_COEF = 0.14              # "the parameters in Eq. 3 were set to 0.14"
EPSILON = 0.98                   # epsilon-greedy threshold
TAU = 0.5                        # key threshold on P(key) during training
LEARNING_RATE = 1e-3             # RMSProp
EPISODES_PER_UPDATE = 8          # mini-batch of 8 episodes
EPISODES = 2400                  # episodes per model
# Not from the paper: decoded training frames kept in memory over all videos (4.3 GB at 513 px)
MAX_FRAMES_IN_MEMORY = 4096
KAR_LIMITS = (0.04, 0.06, 0.14)  # limits eta shown in the paper
DEFAULT_KAR_LIMIT = 0.06

# Policy network layout (§3.2): Conv0 96 channels, FC0/FC1/FC2 1024/1024/128, FC3 -> 2.
POLICY_CONV0_CHANNELS = 96
POLICY_FC_UNITS = (1024, 1024, 128)
NUM_ACTIONS = 2                  # a0 = non-key, a1 = key
LEAKY_ALPHA = 0.1                # LeakyReLU slope of the DVSNet decision network

# --- DVSNet decision network (dvsnet.md: model/decisionmodel.py, train/train.py).
DVSNET_CONV_CHANNELS = 96
DVSNET_FC_UNITS = (1024, 1024, 10)
DVSNET_DROPOUT_RATE = 0.5        # keep probability 0.5 after each hidden FC
DVSNET_FC_BIAS = 0.1             # initial bias of every FC layer
DVSNET_TARGET = 90.0             # default --target, percent
DVSNET_LEARNING_RATE = 2e-3
DVSNET_LR_DECAY = 0.99           # per epoch
DVSNET_BATCH_SIZE = 32
DVSNET_EPOCHS = 100
DVSNET_MAX_GAP = 13              # imagestrain_13_list: key up to 13 frames before current

# DFF's fixed key interval (flownet_dff.md "Inference: key interval 10").
DFF_KEY_INTERVAL = 10

# --- Reconstructed choices (paper.md "Config keys implied by the reconstructions").
DEFAULT_OPTIONS = dict(
    deviation_tap="conv6_1",        # §2: DVSNet taps conv6_1; the paper says "Conv6"
    deviation_size=None,            # None = native grid; (h, w) resizes (Cityscapes: (4, 8))
    kar_prefill="nonkey",           # §3: history pre-filled with non-keys, KAR = keys / H
    lkd_scale=1.0 / HISTORY_WINDOW,  # §3: LKD fed as (i - k) / 90
    stop_check="before",            # §4: stop rule checked before acting
    reward_units="fraction",        # §5: mIoU as a fraction in [0, 1]
    pseudo_acc="pixel_acc",         # §5 Eq. 2: Acc = pixel accuracy
    entropy_form="bonus",           # §6: Omega = -H (A3C) or 1/H
    return_mode="reward_to_go",     # §6: G_i = sum_{t>=i} gamma^(t-i) r_t, or the full return
    baseline="trial_mean",          # §6: mean over the trials at the same step, or none
    eps_clip=EPSILON,               # §7
    tau=TAU,                        # §7
    eta=DEFAULT_KAR_LIMIT,          # §4
)

OPTION_CHOICES = dict(
    deviation_tap=("conv6", "conv6_1"),
    kar_prefill=("nonkey", "none"),
    stop_check=("before", "after"),
    reward_units=("fraction", "percent"),
    pseudo_acc=("pixel_acc", "miou"),
    entropy_form=("bonus", "reciprocal"),
    return_mode=("reward_to_go", "full"),
    baseline=("trial_mean", "none"),
    reward=("eq1", "eq2"),
)


def check_choice(name, value):
    """Raise ConfigError naming the flag when `value` is not one of its choices."""
    choices = OPTION_CHOICES[name]
    if value not in choices:
        # Imported here: model modules import this file and must not pull in deeplab_face's package.
        from deeplab_face.errors import ConfigError

        raise ConfigError(f"--{name}: {value!r} is not one of {', '.join(choices)}")
    return value
