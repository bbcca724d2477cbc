"""Builders for the numpy-backend parity runs (imported without TensorFlow)."""
import keras

from flownet2s.warp import Warp


def build_warp_model(height, width, channels, border="zeros"):
    """[features (B, h, w, c), flow (B, h, w, 2)] -> warp(features, flow, border)."""
    features = keras.Input((height, width, channels), name="features")
    flow = keras.Input((height, width, 2), name="flow")
    return keras.Model([features, flow], Warp(border=border, name="warp")([features, flow]))
