"""The shared per-video cache (docs/interfaces.md "The shared per-video cache").

For one video it computes lazily, and keeps, N's own result on each frame (the
key path) and the propagated result for each (key frame k, current frame i)
pair (the non-key path), each exactly once. The environment's M trials, the
DVSNet decision-network training and the evaluation sweeps all read from it, so
a pair visited by many trials or many sweeps costs one propagation. Missing
entries are computed in fixed-size batches: one compiled call per batch.
"""
import collections
import os

import numpy as np

from deeplab_face.backend import to_numpy
from rl_scheduler import rewards

KeyEntry = collections.namedtuple("KeyEntry", "mask confusion miou")
# `pseudo_miou` (mIoU of the mask against key(i).mask) is an addition for Eq. 2's `pseudo_acc=miou`.
PairEntry = collections.namedtuple(
    "PairEntry", "mask confusion miou conv6 conv6_1 flow_magnitude agreement pseudo_miou")


def _row(batch, j):
    """Row j of a batch as its own (1, ...) array (None stays None)."""
    return None if batch is None else batch[j:j + 1].copy()


class VideoCache:
    """Key results per frame and non-key results per (k, i) pair for one video.

    Memory: frames are whatever `images` / `labels` hold: numpy arrays (everything resident), or
    the lazy views of a `rl_scheduler.frames.LazyVideoFrames` (at most its `max_frames_in_memory`
    decoded frames). Besides, at most `feature_capacity` key feature maps, one (S, S) mask per
    frame for the key path, and `pair_capacity` pair entries (each holds the kept Conv6 taps:
    9x9x384 float32 = 124 KB at S = 513, plus a mask if `keep_masks`).

    Args:
      dff: a `flownet2s.dff.DeepFeatureFlow` (`key`, `propagate`).
      images: uint8 (T, S, S, 3) RGB frames, or an array-like with `len` and integer-array
        indexing (`LazyVideoFrames.images`).
      labels: uint8 (T, S, S) ground truth (255 = ignore), its lazy view, or None (Eq. 2 only).
      num_classes: classes of N.
      batch_size: frames per compiled call (a short batch is padded to a power of two, so a
        few compiled shapes serve every call).
      feature_capacity: key-frame feature maps kept in memory (least recently used go first).
      keep_masks: keep every mask (False saves memory on long runs; entries then hold None).
      keep_taps: which of conv6 / conv6_1 pair entries keep (the other holds None).
      pair_capacity: most pair entries kept (least recently used go first and are recomputed
        when asked for again); None = unbounded.
      key_mask_capacity: with keep_masks False, most key-path masks kept for the agreement of
        new pairs (least recently used go first; N runs again on a miss); None = one per frame.
    """

    def __init__(self, dff, images, labels, num_classes=5, batch_size=8, feature_capacity=64,
                 keep_masks=True, ignore_label=255, keep_taps=("conv6", "conv6_1"), pair_capacity=None,
                 key_mask_capacity=None):
        self.dff = dff
        self.images = images
        self.labels = labels
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.feature_capacity = max(int(feature_capacity), self.batch_size)
        self.keep_masks = keep_masks
        self.ignore_label = ignore_label
        self._keys = {}
        self._key_masks = collections.OrderedDict()   # for the agreement even when keep_masks is False
        self.key_mask_capacity = None if keep_masks or key_mask_capacity is None \
            else max(int(key_mask_capacity), self.batch_size)
        self._pairs = collections.OrderedDict()
        self.keep_taps = tuple(keep_taps)
        self.pair_capacity = None if pair_capacity is None else max(int(pair_capacity), 4 * self.batch_size)
        self._features = collections.OrderedDict()
        self.key_computations = 0   # frames run through N (for the benchmark and tests)
        self.pair_computations = 0  # pairs run through F + warp + N_task

    def __len__(self):
        return len(self.images)

    @property
    def num_frames(self):
        return len(self.images)

    # -- public lookups -------------------------------------------------------
    def key(self, i):
        """KeyEntry of frame i: N's own mask, its confusion matrix and mIoU against the label."""
        i = int(i)
        if i not in self._keys:
            self.prefetch_keys([i])
        return self._keys[i]

    def pair(self, k, i):
        """PairEntry of frame i propagated from key frame k."""
        k, i = int(k), int(i)
        if (k, i) not in self._pairs:
            self.prefetch_pairs([(k, i)])
        elif self.pair_capacity is not None:
            self._pairs.move_to_end((k, i))
        return self._pairs[(k, i)]

    def has_pair(self, k, i):
        return (int(k), int(i)) in self._pairs

    def prefetch_keys(self, indices):
        """Run N on every frame of `indices` not cached yet, in batches."""
        missing = sorted({int(i) for i in indices if int(i) not in self._keys})
        for chunk in self._chunks(missing):
            out = self.dff.key(self._frames(chunk))
            features, probs = to_numpy(out["features"]), to_numpy(out["probs"])
            for j, i in enumerate(chunk):
                mask = np.argmax(probs[j], axis=-1).astype(np.uint8)
                self._remember_mask(i, mask)
                self._keys[i] = KeyEntry(mask if self.keep_masks else None, *self._score(mask, i))
                self._remember_features(i, features[j])
            self.key_computations += len(chunk)

    def prefetch_pairs(self, pairs):
        """Compute every missing (k, i) pair, grouped by key frame, in batches."""
        missing = sorted({(int(k), int(i)) for k, i in pairs if (int(k), int(i)) not in self._pairs})
        if not missing:
            return
        from flownet2s.dff import mean_flow_magnitude  # the one definition of the flow-magnitude score

        # U^{a1} and the agreement target for i; N's result on k too (it was, or will be, a key).
        self.prefetch_keys([i for _, i in missing] + [k for k, _ in missing])
        for chunk in self._chunks(missing):
            self._ensure_key_masks([i for _, i in chunk])
            key_ids = [k for k, _ in chunk]
            self._ensure_features(key_ids)
            key_features = np.stack([self._features[k] for k in key_ids])
            key_features = self._pad(key_features)
            # A batch of table entries, not a stream: DeepFeatureFlow.propagate directly, without the
            # streaming runners' held key (flownet2s.dff.KeyHolder).
            out = self.dff.propagate(self._frames(key_ids), key_features, self._frames([i for _, i in chunk]))
            masks = np.argmax(to_numpy(out["probs"]), axis=-1).astype(np.uint8)  # one call per batch
            conv6 = to_numpy(out["conv6"]) if "conv6" in self.keep_taps else None
            conv6_1 = to_numpy(out["conv6_1"]) if "conv6_1" in self.keep_taps else None
            magnitudes = to_numpy(mean_flow_magnitude(out["flow"])).reshape(-1)
            for j, (k, i) in enumerate(chunk):
                magnitude = float(magnitudes[j])
                key_mask = self._key_masks[i]
                if k == i:  # DFF: the key frame uses its own, unwarped features
                    entry = self._keys[i]
                    self._store((k, i), PairEntry(entry.mask, entry.confusion, entry.miou, _row(conv6, j),
                                                  _row(conv6_1, j), magnitude, 1.0, 1.0))
                    continue
                mask = masks[j]
                confusion, miou = self._score(mask, i)
                self._store((k, i), PairEntry(
                    mask.copy() if self.keep_masks else None, confusion, miou, _row(conv6, j),
                    _row(conv6_1, j),
                    magnitude, rewards.pixel_accuracy(mask, key_mask),
                    rewards.mean_iou(rewards.confusion_matrix(mask, key_mask, self.num_classes))))
            self.pair_computations += len(chunk)

    def prefetch_gaps(self, max_gap, log=None):
        """Every pair (k, i) with 0 < i - k <= max_gap, in batched passes (the pair table that
        training trials and their span credit read; farther pairs stay on demand)."""
        import keras

        pairs = [(k, i) for k in range(self.num_frames)
                 for i in range(k + 1, min(k + max_gap, self.num_frames - 1) + 1) if (k, i) not in self._pairs]
        block = 64 * self.batch_size
        bar = keras.utils.Progbar(len(pairs), verbose=1 if log else 0, unit_name="pair")
        for start in range(0, len(pairs), block):
            self.prefetch_pairs(pairs[start:start + block])
            bar.update(min(start + block, len(pairs)))
        return len(pairs)

    # -- a pair table on disk (shared by the trainings of several stages) -----------------------
    def save_table(self, path):
        """Write the key and pair scores with the kept taps as one .npz (no masks); atomic."""
        keys = sorted(self._keys)
        pairs = sorted(self._pairs)
        arrays = dict(key_index=np.asarray(keys, np.int64).reshape(-1),
                      key_miou=np.asarray([self._keys[i].miou for i in keys], np.float64),
                      pair_index=np.asarray(pairs, np.int64).reshape(-1, 2))
        if self.labels is not None:
            arrays["key_confusion"] = np.stack([self._keys[i].confusion for i in keys]) if keys else \
                np.zeros((0, self.num_classes, self.num_classes), np.int64)
            arrays["pair_confusion"] = np.stack([self._pairs[p].confusion for p in pairs]) if pairs else \
                np.zeros((0, self.num_classes, self.num_classes), np.int64)
        for field in ("miou", "flow_magnitude", "agreement", "pseudo_miou"):
            arrays[f"pair_{field}"] = np.asarray([getattr(self._pairs[p], field) for p in pairs], np.float64)
        for tap in self.keep_taps:
            if pairs:
                arrays[f"pair_{tap}"] = np.concatenate([getattr(self._pairs[p], tap) for p in pairs])
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load_table(self, path):
        """Read a `save_table` file into the cache; a file of another shape is a DataError."""
        from deeplab_face.errors import DataError

        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable pair table ({e})") from None
        missing = [t for t in self.keep_taps if f"pair_{t}" not in arrays and len(arrays["pair_index"])]
        if missing or "key_index" not in arrays:
            raise DataError(f"{path}: pair table lacks {', '.join(missing) or 'key_index'}")
        if len(arrays["key_index"]) and arrays["key_index"].max() >= self.num_frames:
            raise DataError(f"{path}: pair table has frame {arrays['key_index'].max()} but the video has "
                            f"{self.num_frames} frames")
        confusion = arrays.get("key_confusion")
        for n, i in enumerate(arrays["key_index"].tolist()):
            self._keys[i] = KeyEntry(None, None if confusion is None else confusion[n], float(arrays["key_miou"][n]))
        confusion = arrays.get("pair_confusion")
        for n, (k, i) in enumerate(arrays["pair_index"].tolist()):
            taps = {t: arrays[f"pair_{t}"][n:n + 1] if t in self.keep_taps else None for t in ("conv6", "conv6_1")}
            self._store((k, i), PairEntry(None, None if confusion is None else confusion[n],
                                          float(arrays["pair_miou"][n]), taps["conv6"], taps["conv6_1"],
                                          float(arrays["pair_flow_magnitude"][n]), float(arrays["pair_agreement"][n]),
                                          float(arrays["pair_pseudo_miou"][n])))
        return len(arrays["pair_index"])

    # -- internals -------------------------------------------------------------
    def _store(self, pair, entry):
        self._pairs[pair] = entry
        if self.pair_capacity is not None:
            while len(self._pairs) > self.pair_capacity:
                self._pairs.popitem(last=False)

    def _score(self, mask, i):
        if self.labels is None:
            return None, float("nan")
        confusion = rewards.confusion_matrix(mask, self.labels[i], self.num_classes, self.ignore_label)
        return confusion, rewards.mean_iou(confusion)

    def _chunks(self, items):
        for start in range(0, len(items), self.batch_size):
            yield items[start:start + self.batch_size]

    def _pad(self, array):
        """Repeat the last row up to a power of two (at most batch_size): a few compiled shapes only."""
        size = 1
        while size < len(array):
            size *= 2
        size = min(size, self.batch_size) if len(array) <= self.batch_size else len(array)
        if len(array) == size:
            return array
        extra = np.repeat(array[-1:], size - len(array), axis=0)
        return np.concatenate([array, extra])

    def _frames(self, indices):
        return self._pad(self.images[np.asarray(indices)].astype(np.float32))

    def _remember_features(self, i, features):
        self._features[i] = features
        self._features.move_to_end(i)
        while len(self._features) > self.feature_capacity:
            self._features.popitem(last=False)

    def _remember_mask(self, i, mask):
        self._key_masks[i] = mask
        if self.key_mask_capacity is not None:
            self._key_masks.move_to_end(i)
            while len(self._key_masks) > self.key_mask_capacity:
                self._key_masks.popitem(last=False)

    def _ensure_key_masks(self, indices):
        """Key-path masks of `indices` (at most key_mask_capacity distinct; evicted ones recomputed by N)."""
        if self.key_mask_capacity is not None:
            # the ones held become the most recent BEFORE new masks come in, so that the new ones evict
            # only frames outside `indices` (else a held one could be evicted and then be missing)
            for i in dict.fromkeys(indices):
                if i in self._key_masks:
                    self._key_masks.move_to_end(i)
        missing = sorted({i for i in indices if i not in self._key_masks})
        for chunk in self._chunks(missing):
            out = self.dff.key(self._frames(chunk))
            features, masks = to_numpy(out["features"]), np.argmax(to_numpy(out["probs"]), axis=-1)
            for j, i in enumerate(chunk):
                self._remember_mask(i, masks[j].astype(np.uint8))
                self._remember_features(i, features[j])
            self.key_computations += len(chunk)

    def _ensure_features(self, key_ids):
        for k in key_ids:
            if k in self._features:
                self._features.move_to_end(k)
        missing = sorted(set(key_ids) - set(self._features))
        for chunk in self._chunks(missing):  # evicted (or never computed) key features
            features = to_numpy(self.dff.key(self._frames(chunk))["features"])
            for j, k in enumerate(chunk):
                self._remember_features(k, features[j])
            self.key_computations += len(chunk)


def load_video_caches(dff, prepared_dir, video_ids, num_classes=None, max_frames_in_memory=None,
                      block_frames=None, **cache_options):
    """One VideoCache per prepared video.

    max_frames_in_memory: None reads every frame and label into numpy at once (the eager path:
      T x (S*S*4) bytes per video, ~78 GB for 300VW set B at 513 px). A number makes the frames
      lazy (`rl_scheduler.frames.LazyVideoFrames`): decoded in blocks of `block_frames` when an
      episode touches them, at most this many decoded frames over ALL the videos (split evenly,
      one block per video at least; a 513 px frame with its label takes 1.05 MB).
    """
    from deeplab_face.data.pipelines import load_video
    from rl_scheduler.frames import DEFAULT_BLOCK_FRAMES, LazyVideoFrames

    if num_classes is None:
        num_classes = int(dff.segmenter.output_shape[-1]) if hasattr(dff, "segmenter") else 5
    video_ids = list(video_ids)
    caches = []
    for video_id in video_ids:
        if max_frames_in_memory is None:
            images, labels = load_video(prepared_dir, video_id)
        else:
            frames = LazyVideoFrames(prepared_dir, video_id, block_frames or DEFAULT_BLOCK_FRAMES,
                                     int(max_frames_in_memory) // len(video_ids))
            images, labels = frames.images, frames.labels
        caches.append(VideoCache(dff, images, labels, num_classes=num_classes, **cache_options))
    return caches
