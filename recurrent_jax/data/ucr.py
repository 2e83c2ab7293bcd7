"""UCR/UEA time-series classification from aeon's bundled datasets (offline).

Series may have different lengths (JapaneseVowels: 7 to 29 steps): they are
padded at the end and fed with ``seq_lengths``. Channels are standardised
with the training split's mean and standard deviation.
"""

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
    DataError,
    MissingExtraError,
    Task,
    TaskSpec,
    sample_rows,
)

# Classification datasets that aeon ships inside its wheel (no download).
BUNDLED = (
    "JapaneseVowels",
    "BasicMotions",
    "GunPoint",
    "ItalyPowerDemand",
    "ArrowHead",
    "OSULeaf",
    "ACSF1",
    "PickupGestureWiimoteZ",
)


@dataclasses.dataclass(frozen=True)
class UCROptions:
    dataset: str = "JapaneseVowels"

    def __post_init__(self):
        _checks.check_choice("dataset", self.dataset, BUNDLED)


def pad_series(series: list, name: str = "series") -> tuple[np.ndarray, np.ndarray]:
    """Pads a list of (channels, length_i) arrays to xs (N, T_max, channels)
    float32 and returns it with the lengths (N,) int32."""
    if len(series) == 0:
        raise DataError(f"{name}: expected at least one series, got none")
    arrays = [np.asarray(s, dtype=np.float32) for s in series]
    bad = [i for i, a in enumerate(arrays) if a.ndim != 2 or a.shape[1] == 0]
    if bad:
        raise DataError(
            f"{name}: expected 2-d arrays (channels, length >= 1), "
            f"got shape {arrays[bad[0]].shape} at index {bad[0]}"
        )
    channels = {a.shape[0] for a in arrays}
    if len(channels) != 1:
        raise DataError(f"{name}: expected one channel count, got {sorted(channels)}")
    if any(not np.isfinite(a).all() for a in arrays):
        raise DataError(f"{name}: expected finite values, got NaN or Inf")
    lengths = np.array([a.shape[1] for a in arrays], np.int32)
    xs = np.zeros((len(arrays), lengths.max(), channels.pop()), np.float32)
    for i, a in enumerate(arrays):
        xs[i, : a.shape[1]] = a.T
    return xs, lengths


@functools.cache
def load_ucr(dataset: str):
    """((xs, lengths, labels) train, (...) test, class names) as numpy."""
    try:
        from aeon.datasets import load_classification
    except ImportError as e:
        raise MissingExtraError(
            f"task 'ucr' (dataset {dataset!r}) needs aeon: pip install 'recurrent-jax[experiments]'"
        ) from e
    splits = [load_classification(dataset, split=s) for s in ("train", "test")]
    classes = sorted(set(splits[0][1]))
    out = []
    for (series, labels), split in zip(splits, ("train", "test"), strict=True):
        xs, lengths = pad_series(list(series), f"{dataset} {split}")
        unknown = set(labels) - set(classes)
        if unknown:
            raise DataError(f"{dataset} {split}: labels {sorted(unknown)} not in train")
        ids = np.array([classes.index(y) for y in labels], np.int32)
        out.append((xs, lengths, ids))
    return out[0], out[1], classes


def standardise(train_xs, train_lengths, *others):
    """Per-channel mean/std over the valid steps of the training split."""
    valid = np.arange(train_xs.shape[1]) < train_lengths[:, None]
    values = train_xs[valid]
    mean, std = values.mean(0), values.std(0) + 1e-6
    return [
        (x - mean) / std * (np.arange(x.shape[1]) < n[:, None])[..., None]
        for x, n in [(train_xs, train_lengths), *others]
    ]


def build_ucr(options: UCROptions) -> TaskSpec:
    (x_tr, n_tr, y_tr), (x_te, n_te, y_te), classes = load_ucr(options.dataset)
    x_tr, x_te = standardise(x_tr, n_tr, (x_te, n_te))
    steps = max(x_tr.shape[1], x_te.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0)))
    train = Batch(jnp.asarray(pad(x_tr)), jnp.asarray(y_tr), None, jnp.asarray(n_tr))
    test = Batch(jnp.asarray(pad(x_te)), jnp.asarray(y_te), None, jnp.asarray(n_te))
    return TaskSpec(
        input_size=x_tr.shape[-1],
        output_size=len(classes),
        kind=CLASSIFICATION,
        output_mode=LAST,
        causal=False,
        sample_train=lambda key, n: sample_rows(train, key, n),
        eval_set=lambda key, n: test,
        baselines={"accuracy (majority class)": float(np.bincount(y_te).max() / len(y_te))},
        primary_metric="accuracy",
        higher_is_better=True,
        info={
            "dataset": options.dataset,
            "train_size": len(y_tr),
            "test_size": len(y_te),
            "channels": int(x_tr.shape[-1]),
            "lengths": [int(min(n_tr.min(), n_te.min())), int(max(n_tr.max(), n_te.max()))],
        },
    )


TASKS = [
    Task(
        "ucr",
        "UCR/UEA time-series classification bundled with aeon (JapaneseVowels, ...)",
        "many-to-one classification, variable length",
        UCROptions,
        build_ucr,
        extra="aeon",
    )
]
