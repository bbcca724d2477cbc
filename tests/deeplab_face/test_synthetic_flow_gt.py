"""deeplab_face.data.synthetic_flow_gt: ground-truth backward flow of the procedural face videos."""
import cv2
import numpy as np
import pytest

from deeplab_face.data.synthetic import SyntheticFace
from deeplab_face.data.synthetic_flow_gt import (backward_flow, crop_pair, source_points,
                                                 warp_backward)

SIZE = 128


@pytest.fixture(scope="module")
def moving_pair():
    """A video and a (key, current) pair across its first burst of fast head motion."""
    face = SyntheticFace(60, SIZE, seed=3)
    burst = np.flatnonzero(face.schedule.burst)
    key, current = int(burst[0]) - 1, int(burst[0]) + 6
    shift = np.hypot(*(face.schedule.pose[current, :2] - face.schedule.pose[key, :2]))
    assert shift > 0.1 * SIZE   # the pair really moves (else the test below could not fail)
    return face, key, current


def _label_agreement(label, reference):
    face = reference > 0
    return float((label[face] == reference[face]).mean())


def test_warping_the_key_frame_reproduces_the_current_frame(moving_pair):
    face, key, current = moving_pair
    key_rgb, _, key_label = face.render(key)
    rgb, _, label = face.render(current)
    flow, valid = backward_flow(face, current, key)
    warped_label = warp_backward(key_label, flow, cv2.INTER_NEAREST)
    assert _label_agreement(warped_label, label) > 0.93
    assert _label_agreement(key_label, label) < 0.6          # without the flow
    error = np.abs(warp_backward(key_rgb, flow).astype(float) - rgb).mean(-1)
    unwarped = np.abs(key_rgb.astype(float) - rgb).mean(-1)
    assert 0.5 < valid.mean() < 1.0                          # disocclusions and borders are not valid
    assert error[valid].mean() < 7.0                          # sensor noise is 3 per channel
    assert unwarped[valid].mean() > 3 * error[valid].mean()
    # The opposite sign (a forward flow) does not reproduce it: the convention is checked.
    assert _label_agreement(warp_backward(key_label, -flow, cv2.INTER_NEAREST), label) < 0.6


def test_landmarks_follow_blinks_and_mouth(moving_pair):
    face, key, current = moving_pair
    source, moving, _ = source_points(face, current, key, face.points(current))
    assert moving.mean() > 0.9   # a few jaw points fall on the layer's outline, rounded outside
    # Landmarks are the piecewise-affine map's nodes: each lands on its key-frame position.
    np.testing.assert_allclose(source[moving], face.points(key)[moving], atol=1e-3)
    assert np.abs(source[moving] - face.points(current)[moving]).max() > 5   # and they did move


def test_background_is_static_and_the_moving_layer_covers_the_head(moving_pair):
    face, key, current = moving_pair
    rgb, _, label = face.render(current)
    mask = face.moving_mask(current, label)
    assert mask[label > 0].all() and 0.1 < mask.mean() < 0.9
    flow, _ = backward_flow(face, current, key)
    np.testing.assert_array_equal(flow[~mask], 0.0)
    # Outside the moving layer (away from its antialiased edge) the frame is the background + noise.
    background = cv2.erode((~mask).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    difference = np.abs(rgb.astype(float) - face.background)[background]
    assert np.median(difference) < 4.0


def test_crop_pair_flow_is_in_crop_pixels(moving_pair):
    face, key, current = moving_pair
    pair = crop_pair(face, key, current, 65)
    assert pair["image"].shape == (65, 65, 3) and pair["flow"].shape == (65, 65, 2)
    valid = pair["valid"]
    warped = warp_backward(pair["key_label"], pair["flow"], cv2.INTER_NEAREST)
    assert _label_agreement(warped, pair["label"]) > 0.9
    error = np.abs(warp_backward(pair["key_image"], pair["flow"]).astype(float) - pair["image"]).mean(-1)
    unwarped = np.abs(pair["key_image"].astype(float) - pair["image"]).mean(-1)
    # The crops follow the face, so even unwarped they are closer than full frames; the background
    # (which moves in crop coordinates) is what the flow fixes.
    assert error[valid].mean() < 8.0 and unwarped[valid].mean() > 1.6 * error[valid].mean()
    # Determinism: the same pair again gives the same ground truth.
    np.testing.assert_array_equal(crop_pair(face, key, current, 65)["flow"], pair["flow"])
