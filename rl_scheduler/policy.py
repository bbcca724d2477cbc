"""The policy network pi_theta(a | s) (paper §3.2; paper.md §2).

Conv0 (96, 3x3, SAME) on FlowNet2-s Conv6 features -> FC0 1024 -> FC1 1024 ->
FC2 128 -> concat [FC2, KAR, LKD] (130) -> FC3 -> softmax [non-key, key].
Backend-neutral Keras 3: no TensorFlow import here.
"""
import keras
import numpy as np

from deeplab_face.backend import compile_fn, to_numpy
from rl_scheduler import config


def _activation(name, layer_name):
    if name == "leaky_relu":  # reconstructed: as the DVSNet decision network
        return keras.layers.LeakyReLU(negative_slope=config.LEAKY_ALPHA, name=layer_name)
    return keras.layers.Activation(name, name=layer_name)


def budget_key_bias(kar_limit):
    """FC3 key-minus-non-key bias giving P(key) = eta at initialisation (key_bias_init="budget")."""
    eta = min(max(float(kar_limit), 1e-4), 1 - 1e-4)
    return float(np.log(eta / (1.0 - eta)))


def build_policy(deviation_shape, activation="leaky_relu", deviation_size=None, key_bias=0.0,
                 feature_norm=False, expert_size=2):
    """Keras model on `(deviation_features (B,h,w,c), expert (B,2) = [KAR, LKD])`.

    Args:
      deviation_shape: (h, w, c) of the Conv6 tap (9x9x384 at 513 with FlowNet2-s).
      activation: "leaky_relu" (slope 0.1, default) or any Keras activation name.
      deviation_size: optional (h', w') the features are bilinearly resized to first
        (DVSNet resizes conv6_1 to 4x8 on Cityscapes regions).
      key_bias: initial FC3 bias of the key logit (non-key logit 0): P(key) starts near
        sigmoid(key_bias) (`budget_key_bias`); 0 is Keras's default.
      feature_norm: standardise the tap per channel first (a Normalization layer whose mean and
        variance `fit_deviation_norm` sets and the weights file carries; config "feature_norm").
      expert_size: 2 = [KAR, LKD] (the paper); 3 appends the motion since the key
        (config "motion_input").

    Returns (B, 2) probabilities [pi(a0 | s), pi(a1 | s)] = [non-key, key].
    """
    deviation = keras.Input(tuple(deviation_shape), name="deviation_features")
    expert = keras.Input((int(expert_size),), name="expert")
    x = deviation
    if deviation_size is not None:
        x = keras.layers.Resizing(*deviation_size, interpolation="bilinear", name="deviation_resize")(x)
    if feature_norm:
        x = keras.layers.Normalization(axis=-1, name="deviation_norm")(x)
    x = keras.layers.Conv2D(config.POLICY_CONV0_CHANNELS, 3, padding="same", name="conv0")(x)
    x = _activation(activation, "conv0_act")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(config.POLICY_FC_UNITS):
        x = keras.layers.Dense(units, name=f"fc{i}")(x)
        x = _activation(activation, f"fc{i}_act")(x)
    x = keras.layers.Concatenate(name="concat_expert")([x, expert])  # 128 + [KAR, LKD] = 130
    bias = keras.initializers.Constant([0.0, float(key_bias)])
    logits = keras.layers.Dense(config.NUM_ACTIONS, bias_initializer=bias, name="fc3")(x)
    probs = keras.layers.Softmax(name="action_probs")(logits)
    return keras.Model([deviation, expert], probs, name="policy")


def fit_deviation_norm(policy, deviation):
    """Set the policy's per-channel standardisation from training taps `deviation` (N, h, w, c).

    Returns False when the policy has no `deviation_norm` layer (built with feature_norm=False).
    """
    try:
        layer = policy.get_layer("deviation_norm")
    except ValueError:
        return False
    layer.adapt(np.asarray(deviation, np.float32))
    return True


def expert_weights(policy):
    """FC3 weights of the KAR and LKD inputs on the key-minus-non-key logit (Fig. 3, bottom).

    Returns (kar_weight, lkd_weight) as floats: a positive value means a larger
    KAR (LKD) pushes toward a key.
    """
    kernel = to_numpy(policy.get_layer("fc3").kernel)
    first = kernel.shape[0] - expert_size_of(policy)   # the concat appends KAR, LKD (, motion)
    kar_row, lkd_row = kernel[first], kernel[first + 1]
    return float(kar_row[1] - kar_row[0]), float(lkd_row[1] - lkd_row[0])


def expert_size_of(policy):
    """How many expert inputs the policy reads (2: KAR, LKD; 3: and the motion since the key). A
    stand-in without Keras inputs (a scoring function in tests) reads the paper's two."""
    inputs = getattr(policy, "inputs", None)
    return int(inputs[1].shape[-1]) if inputs else 2


def compiled_forward(model):
    """`fn(*inputs) -> numpy` of `model(inputs, training=False)`, compiled once per model.

    Under the TensorFlow backend this is a `tf.function` (deeplab_face.backend.compile_fn: traced once per input shape and
    reading the model's variables, so later weight updates are seen); elsewhere the plain call.
    Measured on the 2-core CPU, policy at batch 1 (9x9x384 tap): eager 6.0 ms, tf.function
    2.5 ms, XLA (jit_compile) 2.3 ms, predict_on_batch 2.6 ms; at batch 32 XLA is slower
    (15 ms vs 11 ms), so no XLA.
    """
    cached = getattr(model, "_compiled_forward", None)
    if cached is not None:   # schedulers sharing a model share its trace
        return cached

    def call(*inputs):
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    graph = compile_fn(call)

    def forward(*inputs):
        return to_numpy(graph(*inputs))
    object.__setattr__(model, "_compiled_forward", forward)  # bypass Keras attribute tracking
    return forward
