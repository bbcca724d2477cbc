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

# --- DVSNet training fixes (issue 13 item 5; rl_scheduler/train_dvsnet.py). Measured on the tiny
# preset's data (S=129, N MobileNet-V2 1000 steps, F 200 steps; conv6_1 2x2x384; agreement mean 94 %,
# 97.6 % at gap 1, 90 % at gaps 100-150). DVSNet's released settings: --nonormalize_targets
# --nonormalize_inputs --nocalibrate_output --gap_sampling=pairs --val_max_gap=9 (max_gap 13, dropout
# 0.5, lr 2e-3, batch 32, 100 epochs: the defaults). "Held-out" below = pairs of test videos 011/012,
# gaps 1-150 (constant predictor 3.64); "val" = the stage's validation (video 010, also a training
# video, pairs disjoint).
# Regress (y - mean) / std with a linear output; the saved weights fold it back to percent
# (dvsnet_decision.fold_standardisation). Why: the percent target (mean ~95) through DVSNet's output
# LeakyReLU, with FC biases at 0.1, starts ~95 points off and Adam (lr 2e-3, ~lr per step) needs
# thousands of steps to get there; the tiny budget has ~110. Measured, 3 epochs x 1200 pairs, gaps <= 13:
# val MAE 41.3 (predictions ~55 %, constant predictor 1.38, Pearson -0.85; the demo's 24.4 on 96.6);
# standardised 1.27 (at gaps <= 13 the target hardly varies: see max_gap). Gaps <= 120, 30 epochs:
# percent 4.03 (constant 3.09, Pearson 0.10), standardised 0.93 (Pearson 0.96; held-out 0.84).
DVSNET_NORMALIZE_TARGETS = True
# conv6_1 / its per-channel RMS, folded into the saved conv kernel. On the tiny preset's F (features
# ~0.3 +- 0.4, channel RMS 0.01-1.6) it changes nothing measurable (held-out Pearson 0.85 with, 0.83
# without; with a random F, features ~1e-4: 0.69 vs 0.72), but channels whose scales span 1e-2..1e2
# (tests/rl_scheduler/test_train_dvsnet.py) are not fitted without it in 12 epochs (val MAE 2.64 against
# the constant predictor's 2.68; with it 0.85). F's feature scale is F's business (a flow-pretrained
# F, another width), so the decision net does not depend on it.
DVSNET_NORMALIZE_INPUTS = True
# "log_uniform": gaps 1..max_gap with log(gap) uniform (the scheduler meets short gaps at every
# operating point, long ones only at large AKIs); "pairs": DVSNet's (every pair with gap 0..max_gap
# equally likely). At max_gap 120, 30 epochs, no dropout: held-out Pearson 0.70 vs 0.60.
DVSNET_GAP_SAMPLING = "log_uniform"
# After each epoch, refit the output's scale a and offset b (z ~ a * net(x) + b) by least squares on
# the training pairs, folded into the saved score layer. Why: with dropout 0.5 the net ranks the pairs
# from the first epoch (val Pearson 0.93) but its outputs stay shrunk toward the mean for ~12 epochs
# (val MAE ~3.2, the constant predictor's 3.5; the refit a is 1.2-8.6, predictions top out at ~96 %
# where the targets reach 99 %). Measured (gaps <= 120, batch 64, lr 1e-3 x0.9 per epoch), 15 epochs:
# val MAE 1.74 -> 1.13, held-out 2.71 -> 1.93; with it, 8 epochs already give held-out 1.99-2.04.
DVSNET_CALIBRATE_OUTPUT = True
DVSNET_CHECKPOINT_EVERY = 10       # epochs between resumable checkpoints (~0.9 s each at S=129)
DVSNET_PAIRS_PER_VIDEO = 1000      # (key, current) pairs drawn per training video
DVSNET_VAL_PAIRS_PER_VIDEO = 500   # and per validation video
# --- end of the DVSNet training fixes.

# Largest key-to-frame gap whose pairs the RL training precomputes per video (and the span credit's
# horizon); pairs farther away are computed on demand. Not from the paper.
CREDIT_HORIZON = 60

# The RL training loop's bookkeeping (not from the paper), in REINFORCE updates: a resumable checkpoint
# and a validation (the best validated policy is kept) every so many, on this many fixed episodes.
CHECKPOINT_EVERY = 10
VALIDATE_EVERY = 10
VALIDATION_EPISODES = 8

# Thresholds tau traced by every validation (one batched rollout): the policy is validated at the tau
# with the most keys within 1.1 x eta, and the best policy's tau is its operating threshold.
VALIDATION_TAUS = tuple(float(t) for t in (0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
                                           0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6,
                                           0.7, 0.8, 0.9))

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
    # §6: G_i = sum_{t>=i} gamma^(t-i) r_t ("reward_to_go", the paper's gamma = 1), the full return,
    # or "immediate" (G_i = r_i; default): with span credit and a key price a key's reward is already
    # its effect on the frames after it net of its cost, and the later rewards only add noise. On
    # the toy gap task (tests) P(key) rose 2.8x from LKD 1 to 25 in 40 updates, vs 2.3x with
    # reward_to_go and no price, and the validation quality was the best of the variants tried.
    return_mode="immediate",
    # §6: the paper's 32 trials share a baseline. "trial_mean" includes the trial itself, so a trial
    # that is alone at a step (the rare long-LKD trial) gets advantage 0 exactly: no signal where the
    # policy most needs it. "leave_one_out" (default) averages the OTHER trials active at that step,
    # falling back to the other episodes of the update when a trial is alone.
    baseline="leave_one_out",
    eps_clip=EPSILON,               # §7
    tau=TAU,                        # §7
    eta=DEFAULT_KAR_LIMIT,          # §4
    # --- Departures that make the policy learn (issue 13; README "Why the first policy did not learn").
    # The paper feeds KAR and LKD raw (reconstructed as keys/90 and (i-k)/90). In visited states they
    # stayed below 0.044 and 0.15, so their FC3 weights barely moved (KAR -0.373 -> -0.374 over 40
    # updates). "budget" feeds KAR / eta (1.0 = at the limit); "raw" is the paper's.
    kar_input="budget",
    # "log": log2(1 + LKD), one unit per doubling (LKD 1..200 spans 1..7.6), so test-time LKDs beyond
    # the training range extrapolate gently and the FC3 weight that makes P(key) rise with LKD is
    # reachable in tens of updates (RMSProp's step is ~lr x gradient, and the gradient scales with the
    # input); "linear": LKD * lkd_scale (the paper reconstruction).
    lkd_input="log",
    # FC3's key-logit bias at initialisation. "zero" starts at P(key) ~ 0.5, so every sampled trial
    # crosses the KAR limit within ~10 steps and never visits a long LKD (completion 0.0 in 36 of 40
    # updates); "budget" starts at P(key) = eta, the rate the budget allows.
    key_bias_init="budget",
    # Eq. 1 credits a key with its own frame's gain only (the reconstructed body): once the budget is
    # spent nothing after it counts, so "3 early keys + 1 late" earns as much as even spacing.
    # "span" also credits a key with the loss it removes on the following frames (as if no later key
    # came: rl_scheduler.environment.span_rewards says why), so a trial's return is the episode's
    # total quality gain over propagation and spacing matters. Terms whose counterfactual pair is
    # farther than `credit_horizon` frames from its key are left out. "frame" is the paper's.
    reward_credit="span",
    # A price per key (Lagrangian relaxation of the budget): "dual" charges lambda per decided key and
    # moves lambda by dual ascent so that training keys at the KAR limit's rate; a key then pays
    # only where its gain beats the price, which is what makes P(key) depend on the state. The stop
    # rule still applies. "none" is the paper's (the budget enforced by the stop rule alone).
    key_price="dual",
    # The Conv6 tap standardised per channel (a Normalization layer fitted on training states, saved
    # with the policy) or fed raw (the paper). On the tiny demo's tables the raw tap is ~3.5e-3 with a
    # per-channel spread of ~3e-4 across pairs, so the raw policy's output does not move with it (probe
    # spread 2e-5 after 40 updates). Standardised, the policy reads it, and overfits the two training
    # videos' feature statistics: on the validation video it keyed 41-69 % of frames at every tau
    # (updates 30-40, lr 1e-3 and 3e-3; entropy 0.2 -> 0.01), while the ridge probe finds little to read
    # (held-out R^2 0.07 from the tap, 0.14 from the gap alone). Default "none" until a flow net whose
    # Conv6 carries motion (the released FlowNet2 weights, or long pretraining) makes the tap worth it.
    feature_norm="none",
    # A third expert input: the motion since the key, as the flow net reports it, m(k, i) - m(k, k + 1)
    # (mean |flow| key -> current, less its value at the first frame after the key, so a flow net's
    # content-dependent offset cancels), times `motion_scale` (1 / its std on training pairs). Measured on
    # the tiny demo's tables (trained on 008-009, scored on 010): held-out R^2 to the per-pair gain 0.52
    # with log(gap), against 0.14 for the gap alone, 0.48 for the raw magnitude with the gap, 0.07 for
    # the Conv6 tap. "none" is the paper's policy (Conv6, KAR, LKD only).
    motion_input="none",
)
# Dual-ascent step of the key price: lambda += step * clip(key ratio / eta - 1, -1, 1) * mean key gain.
KEY_PRICE_STEP = 0.05

OPTION_CHOICES = dict(
    deviation_tap=("conv6", "conv6_1"),
    kar_prefill=("nonkey", "none"),
    stop_check=("before", "after"),
    reward_units=("fraction", "percent"),
    pseudo_acc=("pixel_acc", "miou"),
    entropy_form=("bonus", "reciprocal"),
    return_mode=("immediate", "reward_to_go", "full"),
    baseline=("leave_one_out", "trial_mean", "none"),
    kar_input=("budget", "raw"),
    lkd_input=("log", "linear"),
    key_bias_init=("budget", "zero"),
    reward_credit=("span", "frame"),
    key_price=("dual", "none"),
    feature_norm=("standardize", "none"),
    motion_input=("flow_change", "none"),
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
