"""The generated face stream and the timed fixed-interval run that bench/pipeline.py and bench/gpu_fps.py
share (a library: neither command imports the other). Nothing here imports TensorFlow until it runs."""
import time

import numpy as np


def face_frames(count, size, seed):
    """Synthetic moving-face frames (deeplab_face.data.synthetic), uint8 (count, S, S, 3)."""
    from deeplab_face.data.synthetic import SyntheticFace

    face = SyntheticFace(count, size, seed)
    return np.stack([face.render(t)[0] for t in range(count)])


def timed_stream(dff, interval, frames):
    """(FrameResults, wall seconds) of a fixed-interval run over `frames`."""
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    runtime = DynamicSegmenter(dff, make_scheduler("fixed", threshold=interval))
    start = time.perf_counter()
    results = list(runtime.stream(frames))
    return results, time.perf_counter() - start
