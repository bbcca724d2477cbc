"""DVSNet's decision network (dvsnet.md "Decision network"; Xu et al. CVPR 2018).

conv 96 3x3 SAME -> flatten -> FC 1024 -> FC 1024 -> FC 10 -> FC 1, LeakyReLU 0.1
after every layer including the scalar output, dropout (keep 0.5) after each
hidden FC (1024, 1024 and 10) in training; FC biases start at 0.1. Regresses
the expected confidence score in percent.
Backend-neutral Keras 3: no TensorFlow import here.
"""
import keras

from rl_scheduler import config


def build_decision_network(deviation_shape, deviation_size=None):
    """Keras model: conv6_1 features (B, h, w, c) -> predicted confidence (B, 1), percent."""
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
        x = keras.layers.Dropout(config.DVSNET_DROPOUT_RATE, name=f"fc{i}_dropout")(x)
    x = keras.layers.Dense(1, kernel_initializer=init, bias_initializer=fc_bias, name="score")(x)
    score = keras.layers.LeakyReLU(negative_slope=config.LEAKY_ALPHA, name="score_act")(x)
    return keras.Model(deviation, score, name="dvsnet_decision")
