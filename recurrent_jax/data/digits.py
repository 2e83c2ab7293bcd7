"""Sequential digits: scikit-learn's bundled 8x8 digits read pixel by pixel."""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data.base import (
    CLASSIFICATION,
    LAST,
    Batch,
    MissingExtraError,
    Task,
    TaskSpec,
    sample_rows,
)


@dataclasses.dataclass(frozen=True)
class DigitsOptions:
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.test_fraction < 1.0:
            _checks.fail("test_fraction", "a fraction in (0, 1)", self.test_fraction)
        _checks.check_non_negative("split_seed", self.split_seed)


@functools.cache
def load_digits_split(test_fraction: float, split_seed: int):
    """((x_train, y_train), (x_test, y_test)) as numpy: x (N, 64, 1) in [0, 1]
    (row-major pixel order), y (N,) int32. The split is a fixed permutation
    drawn from ``split_seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise MissingExtraError(
            "task 'digits' needs scikit-learn: pip install 'recurrent-jax[experiments]'"
        ) from e
    digits = load_digits()
    xs = (digits.images.reshape(-1, 64, 1) / 16.0).astype(np.float32)
    ys = digits.target.astype(np.int32)
    order = np.random.RandomState(split_seed).permutation(len(ys))
    num_test = int(round(test_fraction * len(ys)))
    test, train = order[:num_test], order[num_test:]
    return (xs[train], ys[train]), (xs[test], ys[test])


def build_digits(options: DigitsOptions) -> TaskSpec:
    (x_tr, y_tr), (x_te, y_te) = load_digits_split(options.test_fraction, options.split_seed)
    train = Batch(jnp.asarray(x_tr), jnp.asarray(y_tr))
    test = Batch(jnp.asarray(x_te), jnp.asarray(y_te))
    return TaskSpec(
        input_size=1,
        output_size=10,
        kind=CLASSIFICATION,
        output_mode=LAST,
        causal=False,
        sample_train=lambda key, n: sample_rows(train, key, n),
        eval_set=lambda key, n: test,
        baselines={"accuracy (majority class)": float(np.bincount(y_te).max() / len(y_te))},
        primary_metric="accuracy",
        higher_is_better=True,
        info={"train_size": len(y_tr), "test_size": len(y_te), "seq_len": 64},
    )


TASKS = [
    Task(
        "digits",
        "sequential 8x8 digits (scikit-learn), one pixel per step, 64 steps",
        "many-to-one classification",
        DigitsOptions,
        build_digits,
        extra="scikit-learn",
    )
]
