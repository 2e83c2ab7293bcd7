"""Tasks: shapes, dtypes and meaning of generated batches; loaders' errors."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrent_jax.data import (
    DataError,
    MissingExtraError,
    digits,
    get_task,
    losses_and_metrics,
    synthetic,
    task_names,
    ucr,
)
from recurrent_jax.data.base import Batch


def test_registry_lists_the_tasks():
    assert {"adding", "copy", "parity", "digits", "ucr"} <= set(task_names())
    with pytest.raises(ValueError, match="data.task: expected a task of"):
        get_task("nope")


def test_adding_target_is_sum_of_marked_values(key):
    batch = synthetic.adding_batch(key, 8, 12)
    assert batch.xs.shape == (8, 12, 2) and batch.xs.dtype == jnp.float32
    assert batch.targets.shape == (8, 1)
    marks = np.asarray(batch.xs[..., 1])
    assert (marks.sum(-1) == 2).all()
    assert (marks[:, :6].sum(-1) == 1).all()  # one mark in each half
    np.testing.assert_allclose(
        batch.targets[:, 0], (batch.xs[..., 0] * batch.xs[..., 1]).sum(-1), rtol=1e-6
    )


def test_copy_targets_repeat_the_symbols(key):
    batch = synthetic.copy_batch(key, 4, num_symbols=5, length=3, delay=2)
    assert batch.xs.shape == (4, 3 + 2 + 3, 7)
    ids = np.asarray(batch.xs.argmax(-1))
    np.testing.assert_array_equal(ids[:, :3] - 1, np.asarray(batch.targets[:, -3:]))
    assert (ids[:, 5] == 6).all()  # the go marker
    np.testing.assert_array_equal(batch.weights[0], [0, 0, 0, 0, 0, 1, 1, 1])


def test_parity_targets(key):
    batch = synthetic.parity_batch(key, 16, 7)
    assert batch.xs.shape == (16, 7, 1) and batch.targets.dtype == jnp.int32
    np.testing.assert_array_equal(batch.targets, batch.xs[..., 0].sum(-1).astype(int) % 2)


def test_parity_variable_lengths_count_only_valid_bits(key):
    batch = synthetic.parity_batch(key, 64, 7, variable_lengths=True)
    lengths = np.asarray(batch.seq_lengths)
    assert lengths.min() >= 1 and lengths.max() <= 7 and len(set(lengths)) > 3
    bits = np.asarray(batch.xs[..., 0]).astype(int)
    for b, n in enumerate(lengths):
        assert bits[b, n:].sum() == 0  # padding carries no bits
        assert batch.targets[b] == bits[b, :n].sum() % 2


def test_batches_are_deterministic_in_the_key(key):
    a = synthetic.adding_batch(key, 4, 6)
    b = synthetic.adding_batch(key, 4, 6)
    np.testing.assert_array_equal(a.xs, b.xs)


def test_digits_split_is_fixed_and_disjoint():
    pytest.importorskip("sklearn")
    (x_tr, y_tr), (x_te, y_te) = digits.load_digits_split(0.2, 0)
    assert x_tr.shape == (1438, 64, 1) and x_te.shape == (359, 64, 1)
    assert x_tr.min() >= 0.0 and x_tr.max() <= 1.0
    train_rows = {r.tobytes() for r in x_tr}
    assert sum(r.tobytes() in train_rows for r in x_te) < 10  # a few duplicate images exist


def test_digits_task_samples_train_rows(key):
    pytest.importorskip("sklearn")
    task = digits.build_digits(digits.DigitsOptions())
    batch = task.sample_train(key, 5)
    assert batch.xs.shape == (5, 64, 1) and batch.targets.shape == (5,)
    assert task.eval_set(key, 1).xs.shape == (359, 64, 1)


def test_pad_series_pads_and_reports_lengths():
    xs, lengths = ucr.pad_series([np.ones((2, 3)), 2 * np.ones((2, 5))])
    assert xs.shape == (2, 5, 2)
    np.testing.assert_array_equal(lengths, [3, 5])
    assert (xs[0, 3:] == 0).all() and (xs[1] == 2).all()


@pytest.mark.parametrize(
    "series, message",
    [
        ([], "expected at least one series"),
        ([np.ones((2, 3)), np.ones((3, 3))], r"expected one channel count, got \[2, 3\]"),
        ([np.ones(3)], r"expected 2-d arrays .*got shape \(3,\) at index 0"),
        ([np.ones((2, 0))], r"length >= 1"),
        ([np.full((1, 2), np.nan)], "expected finite values"),
    ],
)
def test_pad_series_rejects_bad_data(series, message):
    with pytest.raises(DataError, match=message):
        ucr.pad_series(series)


def test_missing_optional_package_names_the_extra(monkeypatch):
    ucr.load_ucr.cache_clear()
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'recurrent-jax\[experiments\]'"):
        ucr.load_ucr("GunPoint")
    ucr.load_ucr.cache_clear()


def test_japanese_vowels_is_variable_length():
    pytest.importorskip("aeon")
    task = ucr.build_ucr(ucr.UCROptions("JapaneseVowels"))
    assert task.input_size == 12 and task.output_size == 9
    test = task.eval_set(None, 0)
    assert test.xs.shape[0] == 370
    assert int(test.seq_lengths.min()) < int(test.seq_lengths.max()) == test.xs.shape[1]


def test_metrics_weighted_classification():
    task = get_task("copy").build(synthetic.CopyOptions(num_symbols=3, length=1, delay=0))
    logits = jnp.array([[[9.0, 0, 0], [0, 9.0, 0]]])
    batch = Batch(jnp.zeros((1, 2, 5)), jnp.array([[2, 1]]), jnp.array([[0.0, 1.0]]))
    metrics = losses_and_metrics(task, logits, batch)
    assert float(metrics["accuracy"]) == 1.0  # the unscored step is wrong but ignored
    assert float(metrics["loss"]) < 1e-3


def test_metrics_regression():
    task = get_task("adding").build(synthetic.AddingOptions(4))
    batch = Batch(jnp.zeros((2, 4, 2)), jnp.array([[1.0], [3.0]]))
    metrics = losses_and_metrics(task, jnp.array([[2.0], [3.0]]), batch)
    assert float(metrics["mse"]) == 0.5


def test_sample_train_jits(key):
    task = get_task("adding").build(synthetic.AddingOptions(5))
    batch = jax.jit(task.sample_train, static_argnums=1)(key, 3)
    assert batch.xs.shape == (3, 5, 2)


def test_text_windows_predict_the_next_char(key):
    from recurrent_jax.data import text

    task = text.build_text(text.TextOptions(seq_len=8))
    batch = task.sample_train(key, 3)
    size = task.input_size
    assert batch.xs.shape == (3, 8, size) and batch.targets.shape == (3, 8)
    np.testing.assert_array_equal(batch.xs.argmax(-1)[:, 1:], batch.targets[:, :-1])
    evals = task.eval_set(key, 5)
    assert evals.xs.shape == (5, 8, size)
    assert 0 < task.baselines["bits_per_char (unigram)"] < np.log2(size)


@pytest.mark.parametrize(
    "content, options, message",
    [
        (None, {}, r"config\.data\.path: no such file"),
        ("   \n", {}, r"config\.data\.path: the text file .* is empty"),
        ("abcdefghij" * 3, {"seq_len": 8}, r"config\.data\.seq_len: expected at most 2 for"),
        ("abc", {}, r"config\.data\.path '.*t\.txt': too short: .* hold 3 and 0 tokens"),
        ("abc", {"tokens": "words"}, r"too short: .* hold 1 and 0 tokens"),
    ],
)
def test_text_loader_errors(tmp_path, content, options, message):
    from recurrent_jax.data import text

    path = tmp_path / "t.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        text.build_text(text.TextOptions(path=str(path), **options))


def test_forecast_scores_the_last_months(key):
    pytest.importorskip("aeon")
    from recurrent_jax.data import forecast

    task = forecast.build_forecast(forecast.ForecastOptions(seq_len=12, test_steps=24))
    evals = task.eval_set(key, 0)
    assert evals.xs.shape == (1, 143, 1) and float(evals.weights.sum()) == 24
    np.testing.assert_array_equal(evals.xs[0, 1:, 0], evals.targets[0, :-1, 0])
    assert 0 < task.baselines["mse (seasonal naive)"] < 1
    assert task.sample_train(key, 4).xs.shape == (4, 12, 1)


def test_seasonal_naive_is_exact_for_a_periodic_series():
    from recurrent_jax.data import forecast

    series = np.tile(np.arange(12.0), 5)
    assert forecast.seasonal_naive_mse(series, 24, 12) == 0.0


def test_moving_digits_frames_follow_a_bouncing_path():
    """Brute force: a solid 8x8 block rendered by the task sits, frame by
    frame, at reflect(p0 + v t) for one velocity v of the allowed ones."""
    import itertools

    from recurrent_jax.data import moving_digits as md

    assert [int(md.reflect(p, 4)) for p in range(-3, 12)] == [
        3,
        2,
        1,
        0,
        1,
        2,
        3,
        4,
        3,
        2,
        1,
        0,
        1,
        2,
        3,
    ]
    canvas, steps, speed = 13, 9, 2
    frames = md.render(jnp.ones((6, 8, 8)), jax.random.key(0), steps, canvas, speed)[..., 0]
    span = canvas - 8
    speeds = [v for v in range(-speed, speed + 1) if v]

    def bounce(p):  # the walls, by hand
        while not 0 <= p <= span:
            p = -p if p < 0 else 2 * span - p
        return p

    for sequence in np.asarray(frames):
        corners = [tuple(int(a.min()) for a in np.nonzero(f)) for f in sequence]
        assert all(f.sum() == 64 for f in sequence)  # the whole block, always inside
        paths = [
            [(bounce(corners[0][0] + vy * t), bounce(corners[0][1] + vx * t)) for t in range(steps)]
            for vy, vx in itertools.product(speeds, speeds)
        ]
        assert corners in paths
    task = md.build_moving_digits(md.MovingDigitsOptions(canvas=12, seq_len=7))
    batch = task.sample_train(jax.random.key(1), 4)
    assert batch.xs.shape == (4, 6, 12, 12, 1) and task.spatial_shape == (12, 12)
    np.testing.assert_array_equal(batch.xs[:, 1:], batch.targets[:, :-1])  # next frames
    with pytest.raises(ValueError, match="canvas: expected an int > 8"):
        md.MovingDigitsOptions(canvas=8)
