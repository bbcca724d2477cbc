"""flownet2s.checkpoint: a TF1 checkpoint with DVSNet's names round-trips; mismatches are listed."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.errors import CheckpointError
from flownet2s import build_flownet
from flownet2s.checkpoint import checkpoint_map, load_tf1_checkpoint


def write_tf1_checkpoint(prefix, variables):
    """A TF1 `Saver` checkpoint holding {name: value} (as DVSNet's release was written)."""
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix))


def dvsnet_variables(model, seed=0, scale_channels=19):
    """DVSNet-named values for every weight of a 3/8-width model, plus a scale head and extras."""
    rng = np.random.default_rng(seed)
    variables = {}
    for name, (layer, index) in checkpoint_map(model, "FlowNets").items():
        variables[name] = rng.normal(size=layer.weights[index].shape).astype(np.float32)
    variables["FlowNets/predict_scale/weights"] = rng.normal(size=(3, 3, 74, scale_channels)).astype(np.float32)
    variables["FlowNets/predict_scale/biases"] = rng.normal(size=(scale_channels,)).astype(np.float32)
    variables["global_step"] = np.int64(1000)
    variables["FlowNets/conv1/weights/Adam"] = np.zeros((7, 7, 6, 24), np.float32)
    return variables


def test_dvsnet_checkpoint_round_trip(tmp_path):
    model = build_flownet(input_size=64, feature_channels=8)
    variables = dvsnet_variables(model)
    assert len([n for n in variables if n.startswith("FlowNets/") and "Adam" not in n]) == 40
    prefix = write_tf1_checkpoint(tmp_path / "model.ckpt", variables)
    report = load_tf1_checkpoint(model, str(tmp_path))   # directory -> latest checkpoint
    assert report["scope"] == "FlowNets" and len(report["loaded"]) == 38
    assert report["skipped"] == ["FlowNets/predict_scale/biases", "FlowNets/predict_scale/weights"]
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), variables["FlowNets/conv1/weights"])
    np.testing.assert_array_equal(model.get_layer("deconv4").kernel.numpy(), variables["FlowNets/deconv4/weights"])
    np.testing.assert_array_equal(model.get_layer("predict_flow2").bias.numpy(),
                                  variables["FlowNets/predict_flow2/biases"])
    np.testing.assert_array_equal(model.get_layer("scale_conv").bias.numpy(), 1.0)  # identity kept
    # DVSNet's own head shape (3x3 -> 19): loaded too.
    dvs = build_flownet(input_size=64, feature_channels=19, scale_head="dvsnet")
    report = load_tf1_checkpoint(dvs, prefix)
    assert report["skipped"] == [] and len(report["loaded"]) == 40
    np.testing.assert_array_equal(dvs.get_layer("predict_scale").kernel.numpy(),
                                  variables["FlowNets/predict_scale/weights"])


def test_mismatches_are_listed(tmp_path):
    model = build_flownet(input_size=64)
    variables = dvsnet_variables(model)
    del variables["FlowNets/conv2/biases"]
    variables["FlowNets/conv7/weights"] = np.zeros((3, 3, 4, 4), np.float32)
    variables["FlowNets/conv3/weights"] = np.zeros((5, 5, 48, 95), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "bad.ckpt", variables)
    before = model.get_layer("conv1").kernel.numpy().copy()
    with pytest.raises(CheckpointError) as error:
        load_tf1_checkpoint(model, prefix)
    message = str(error.value)
    assert message.startswith(prefix) and "does not match the flow net (width 0.375)" in message
    assert "1 missing (FlowNets/conv2/biases)" in message and "1 unexpected (FlowNets/conv7/weights)" in message
    assert "1 mis-shaped (FlowNets/conv3/weights [5, 5, 48, 95]!=" in message and "\n" not in message
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)  # nothing half-loaded
    # A full-width checkpoint does not fit the 3/8 net.
    wide = build_flownet(width=1.0, input_size=64)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_tf1_checkpoint(wide, prefix, scope="FlowNets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="expected one TF1 checkpoint in this directory"):
        load_tf1_checkpoint(model, str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no_such.ckpt: not a readable TF1 checkpoint"):
        load_tf1_checkpoint(model, str(tmp_path / "no_such.ckpt"))
