"""Reading back what a training wrote to TensorBoard (shared by the stage tests)."""
import glob
import os


def tensorboard_tags(root):
    """Every summary tag in the event files under `root`/tensorboard."""
    import tensorflow as tf
    tags = set()
    for path in glob.glob(os.path.join(root, "tensorboard", "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags
