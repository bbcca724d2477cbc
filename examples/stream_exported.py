"""Segment a face video with the exported pipeline (eval.export) using tensorflow, numpy and cv2 only.

    python examples/stream_exported.py --model=DIR --video=face.mp4 [--masks=masks.npz] [--csv=log.csv]
                                       [--max_frames=N] [--threshold=T]

Nothing of the repository is imported: the SavedModel in DIR holds the networks and the expert-input
scaling, DIR/pipeline.json the threshold, the policy's tap and the decision-history rules, and this
file keeps its own history (the KAR window and the last-key distance), as eval.runtime does:

- frame 0 is a forced key: key(frame); it is no decision (the window is untouched, LKD becomes 1);
- frame i > 0: propagate(key frame, key features, frame) gives the non-key mask, the flow magnitude and
  the flow net's taps; decide(tap, kar, lkd) gives P(key); a key (P(key) > threshold) runs key(frame)
  and becomes the new key frame; the decision enters the window.

Frames are the whole video frame resized to S x S (cv2.INTER_LINEAR, as eval.segment_video
--crop=whole), RGB. Prints one line per frame (or writes --csv) and the AKI at the end; --masks saves
every mask (uint8 (T, S, S)) and the keys.
"""
import argparse
import collections
import json
import os

import cv2
import numpy as np
import tensorflow as tf


class History:
    """KAR over the last `window` decisions and LKD = frames since the last key (eval.export rules)."""

    def __init__(self, window, kar_prefill="nonkey"):
        self.window, self.kar_prefill = int(window), kar_prefill
        self.slots = collections.deque(maxlen=self.window)   # the last decisions, 1 = key
        self.decisions = 0
        self.lkd = 0

    def force_key(self):
        self.lkd = 1

    def push(self, is_key):
        self.slots.append(1 if is_key else 0)
        self.decisions += 1
        self.lkd = 1 if is_key else self.lkd + 1

    @property
    def kar(self):
        keys = float(sum(self.slots))
        if self.kar_prefill == "nonkey":
            return keys / self.window
        seen = min(self.decisions, self.window)
        return keys / seen if seen else 0.0


class ExportedPipeline:
    """The three signatures of an exported model and the streaming state around them."""

    def __init__(self, model_dir, threshold=None):
        with open(os.path.join(model_dir, "pipeline.json")) as f:
            self.info = json.load(f)
        model = tf.saved_model.load(model_dir)
        self._key, self._propagate, self._decide = (model.signatures[n] for n in ("key", "propagate", "decide"))
        self._model = model   # keeps the variables alive
        self.threshold = float(self.info["threshold"] if threshold is None else threshold)
        self.tap = self.info["deviation_tap"]
        self.motion = int(self.info.get("expert_size", 2)) == 3
        self.reset()

    def reset(self):
        self.history = History(self.info["window"], self.info["kar_prefill"])
        self.key_frame = self.key_features = None
        self.motion_base = 0.0
        self.index = 0

    def step(self, frame):
        """(mask uint8 (S, S), is_key, p_key or nan) for the next RGB uint8 (S, S, 3) frame."""
        frame = tf.constant(frame[None])
        i, self.index = self.index, self.index + 1
        if i == 0:
            self.history.force_key()
            return self._take_key(frame), True, float("nan")
        out = self._propagate(key_frame=self.key_frame, key_features=self.key_features, frame=frame)
        inputs = {self.tap: out[self.tap], "kar": tf.constant([self.history.kar], tf.float32),
                  "lkd": tf.constant([float(self.history.lkd)], tf.float32)}
        if self.motion:   # the flow change since the first frame after the key
            magnitude = float(out["flow_magnitude"].numpy()[0])
            if self.history.lkd <= 1:
                self.motion_base = magnitude
            inputs["flow_change"] = tf.constant([magnitude - self.motion_base], tf.float32)
        p_key = float(self._decide(**inputs)["p_key"].numpy()[0])
        is_key = p_key > self.threshold
        self.history.push(is_key)
        if is_key:
            return self._take_key(frame), True, p_key
        return out["mask"].numpy()[0], False, p_key

    def _take_key(self, frame):
        out = self._key(frame=frame)
        self.key_frame, self.key_features = frame, out["features"]
        return out["mask"].numpy()[0]


def read_frames(video, size, max_frames=None):
    """RGB uint8 (size, size, 3) frames of a video file (or a camera index)."""
    capture = cv2.VideoCapture(int(video) if str(video).isdigit() else video)
    if not capture.isOpened():
        raise SystemExit(f"error: {video}: cannot open the video")
    count = 0
    while max_frames is None or count < max_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if rgb.shape[:2] != (size, size):
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
        yield rgb
        count += 1
    capture.release()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder written by python -m eval.export")
    parser.add_argument("--video", required=True, help="video file, or a camera index")
    parser.add_argument("--masks", help="write every mask and the key flags to this .npz")
    parser.add_argument("--csv", help="write frame,is_key,p_key rows here instead of printing them")
    parser.add_argument("--max_frames", type=int)
    parser.add_argument("--threshold", type=float, help="tau on P(key) (default: pipeline.json's)")
    args = parser.parse_args()
    pipeline = ExportedPipeline(args.model, args.threshold)
    masks, keys, rows = [], [], ["frame,is_key,p_key"]
    for i, frame in enumerate(read_frames(args.video, pipeline.info["crop_size"], args.max_frames)):
        mask, is_key, p_key = pipeline.step(frame)
        keys.append(is_key)
        if args.masks:
            masks.append(mask)
        rows.append(f"{i},{int(is_key)},{p_key:.6f}")
        if not args.csv:
            print(rows[-1], flush=True)
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("\n".join(rows) + "\n")
    if args.masks:
        np.savez_compressed(args.masks, masks=np.stack(masks) if masks else np.zeros((0,), np.uint8),
                            keys=np.asarray(keys, bool))
    print(f"{len(keys)} frames, {sum(keys)} keys, AKI {len(keys) / max(sum(keys), 1):.2f}")


if __name__ == "__main__":
    main()
