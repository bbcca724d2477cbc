"""DVSNet's decision network (dvsnet.md "Decision network"; Xu et al. CVPR 2018).

conv 96 3x3 SAME -> flatten -> FC 1024 -> FC 1024 -> FC 10 -> FC 1, LeakyReLU 0.1
after every layer including the scalar output, dropout (keep 0.5) after each
hidden FC (1024, 1024 and 10) in training; FC biases start at 0.1. Regresses
the expected confidence score in percent.

The saved network is always this layout and always outputs percent. Training may
use a variant (`dropout_rate`, `score_activation=False`) on standardised inputs and
targets; `fold_standardisation` then writes the scalings into the conv kernel and the
score layer of a plain `build_decision_network` model (rl_scheduler.train_dvsnet).
Backend-neutral Keras 3: no TensorFlow import here.
"""
import keras
import numpy as np

from rl_scheduler import config


def build_decision_network(deviation_shape, deviation_size=None, dropout_rate=config.DVSNET_DROPOUT_RATE,
                           score_activation=True):
    """Keras model: conv6_1 features (B, h, w, c) -> predicted confidence (B, 1), percent.

    dropout_rate: of the Dropout after each hidden FC (training only; no weights, so any rate
      loads the same weights). score_activation: DVSNet's LeakyReLU on the scalar output; False
      gives a linear output (training on standardised targets, which are negative half the time).
    """
    deviation = keras.Input(tuple(deviation_shape), name="deviation_features")
    x = deviation
    if deviation_size is not None:
        x = keras.layers.Resizing(*deviation_size, interpolation="bilinear", name="deviation_resize")(x)
    init = keras.initializers.VarianceScaling(scale=2.0)  # tf.contrib variance_scaling_initializer default
    fc_bias = keras.initializers.Constant(config.DVSNET_FC_BIAS)  # every FC bias starts at 0.1
    x = keras.layers.Conv2D(config.DVSNET_CONV_CHANNELS, 3, padding="same", kernel_initializer=init,
                            name="conv")(x)
    x = keras.layers.LeakyReLU(negative_slope=config.LEAKY_ALPHA, name="conv_act")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(config.DVSNET_FC_UNITS):
        x = keras.layers.Dense(units, kernel_initializer=init, bias_initializer=fc_bias, name=f"fc{i}")(x)
        x = keras.layers.LeakyReLU(negative_slope=config.LEAKY_ALPHA, name=f"fc{i}_act")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"fc{i}_dropout")(x)
    x = keras.layers.Dense(1, kernel_initializer=init, bias_initializer=fc_bias, name="score")(x)
    if score_activation:
        x = keras.layers.LeakyReLU(negative_slope=config.LEAKY_ALPHA, name="score_act")(x)
    return keras.Model(deviation, x, name="dvsnet_decision")


def fold_standardisation(trained, target, input_scale=None, target_mean=0.0, target_std=1.0):
    """Copy `trained`'s weights into `target` (a plain `build_decision_network`), folding in the
    standardisations it was trained with, so that `target` takes raw conv6_1 and outputs percent.

    `trained` saw x / input_scale (per channel; the optional resize is linear per channel, so the
    scale commutes with it) and predicted z = (y - target_mean) / target_std with a linear output:
    target's conv kernel is divided by input_scale over its input channels, its score layer gives
    target_std * z + target_mean, and DVSNet's LeakyReLU on the output leaves every prediction >= 0
    (every percent) unchanged. Exact up to float rounding.
    """
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        weights = [np.array(w, copy=True) for w in trained.get_layer(layer.name).get_weights()]
        if layer.name == "conv" and input_scale is not None:
            weights[0] = weights[0] / np.asarray(input_scale, np.float32).reshape(1, 1, -1, 1)
        if layer.name == "score":
            weights[0] = weights[0] * np.float32(target_std)
            weights[1] = weights[1] * np.float32(target_std) + np.float32(target_mean)
        layer.set_weights([w.astype(np.float32) for w in weights])
    return target
