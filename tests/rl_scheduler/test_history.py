import numpy as np
import pytest

from rl_scheduler import config
from rl_scheduler.history import BatchedHistory, DecisionHistory


def test_prefilled_window_counts_keys_over_h():
    h = DecisionHistory()
    assert h.window == config.HISTORY_WINDOW == 90
    h.force_key()
    assert h.kar == 0.0 and h.keys == 0          # the forced first key is not a decision
    assert h.last_key_distance == 1
    h.push(True)
    assert h.kar == pytest.approx(1 / 90)         # not 1/1: the window is pre-filled with non-keys
    for _ in range(4):
        h.push(False)
    assert h.last_key_distance == 5
    assert h.lkd == pytest.approx(5 / 90)
    h.push(True)
    assert h.kar == pytest.approx(2 / 90) and h.last_key_distance == 1


def test_window_forgets_old_decisions():
    h = DecisionHistory(window=5)
    for d in [True, True, False, False, False]:
        h.push(d)
    assert h.keys == 2
    h.push(False)                                  # first key leaves the window
    assert h.keys == 1 and h.kar == pytest.approx(1 / 5)
    h.push(False)
    assert h.keys == 0 and h.last_key_distance == 6


def test_matches_a_reference_on_random_sequences():
    rng = np.random.default_rng(123)
    window = int(rng.integers(3, 12))
    decisions = rng.random((4, 50)) < 0.3
    batched = BatchedHistory(4, window=window, lkd_scale=0.5)
    batched.force_key()
    for t in range(50):
        batched.push(decisions[:, t])
        for m in range(4):
            seen = decisions[m, max(0, t + 1 - window):t + 1]
            assert batched.keys[m] == seen.sum()
            past_keys = np.nonzero(decisions[m, :t + 1])[0]
            distance = t + 1 - past_keys[-1] if len(past_keys) else t + 2   # forced key at "t = -1"
            assert batched.last_key_distance[m] == distance
            assert batched.lkd[m] == pytest.approx(0.5 * distance)
    np.testing.assert_allclose(batched.expert()[:, 0], batched.keys / window, rtol=1e-6)


def test_masked_push_leaves_stopped_trials_alone():
    b = BatchedHistory(3, window=4)
    b.force_key()
    b.push([True, True, True], mask=[True, False, True])
    np.testing.assert_array_equal(b.keys, [1, 0, 1])
    np.testing.assert_array_equal(b.last_key_distance, [1, 1, 1])
    b.push([False, True, False], mask=[True, False, True])
    np.testing.assert_array_equal(b.last_key_distance, [2, 1, 2])


def test_growing_denominator_option_and_exceeds():
    h = DecisionHistory(window=10, kar_prefill="none")
    assert h.kar == 0.0
    h.push(True)
    assert h.kar == 1.0                           # why the paper's reading needs the pre-fill
    h.push(False)
    assert h.kar == 0.5
    b = BatchedHistory(1, window=10)
    for _ in range(3):
        b.push(True)
    assert not b.exceeds(0.3)[0]                  # 3/10 is not above 0.3 despite float rounding
    b.push(True)
    assert b.exceeds(0.3)[0]


def test_rejects_unknown_prefill():
    from deeplab_face.errors import ConfigError
    with pytest.raises(ConfigError, match="kar_prefill"):
        DecisionHistory(kar_prefill="zeros")
