"""DigitsCNN: the data split, bit-reproducible training and held-out accuracy."""

from __future__ import annotations

import numpy as np
import torch

from models import digits_cnn


def test_splits_are_stratified_normalised_and_held_out() -> None:
    splits = digits_cnn.load_splits()
    assert splits.x_train.shape == (1437, 1, 8, 8) and splits.x_test.shape == (360, 1, 8, 8)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
    assert splits.x_train.min() >= 0.0 and splits.x_train.max() <= 1.0
    assert np.bincount(splits.y_test).min() >= 35  # every class held out in proportion
    x_test, y_test = digits_cnn.eval_data()
    np.testing.assert_array_equal(x_test, splits.x_test)
    np.testing.assert_array_equal(y_test, digits_cnn.load_splits().y_test)  # same split every call


def test_two_builds_are_bit_identical_and_leave_global_state_alone() -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    first, second = digits_cnn.build(epochs=2), digits_cnn.build(epochs=2)
    assert not first.training
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.state_dict()["head.weight"], digits_cnn.build(seed=1, epochs=2).head.weight)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_default_build_reaches_97_percent_on_held_out_digits() -> None:
    model = digits_cnn.build()
    assert digits_cnn.accuracy(model, *digits_cnn.eval_data()) >= 97.0
