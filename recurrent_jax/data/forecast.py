"""One-step-ahead forecasting of aeon's bundled Airline series (monthly
airline passengers 1949-1960), with a seasonal-naive baseline.

The series is log-transformed and standardised with the training part's
statistics. Training samples random windows of the first
``len - test_steps`` months; evaluation reads the whole series and scores
the forecasts of the last ``test_steps`` months (the model only sees the
past: it is causal). Baseline: the value one season earlier.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data.base import (
    REGRESSION,
    SEQUENCE,
    Batch,
    DataError,
    MissingExtraError,
    Task,
    TaskSpec,
)


@dataclasses.dataclass(frozen=True)
class ForecastOptions:
    seq_len: int = 36
    test_steps: int = 24
    season: int = 12

    def __post_init__(self):
        _checks.check_positive("seq_len", self.seq_len)
        _checks.check_positive("test_steps", self.test_steps)
        _checks.check_positive("season", self.season)


@functools.cache
def load_airline() -> np.ndarray:
    try:
        from aeon.datasets import load_airline as aeon_airline
    except ImportError as e:
        raise MissingExtraError(
            "task 'forecast' needs aeon: pip install 'recurrent-jax[experiments]'"
        ) from e
    values = np.asarray(aeon_airline(), np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all() or (values <= 0).any():
        raise DataError("Airline: expected positive finite values")
    return values


def seasonal_naive_mse(series: np.ndarray, test_steps: int, season: int) -> float:
    truth = series[-test_steps:]
    guess = series[-test_steps - season : len(series) - season]
    return float(np.mean((truth - guess) ** 2))


def build_forecast(options: ForecastOptions) -> TaskSpec:
    raw = np.log(load_airline())
    T, n_test = options.seq_len, options.test_steps
    n_train = len(raw) - n_test
    if n_train < T + 1 or n_test + options.season > len(raw):
        raise DataError(
            f"config.data: the series has {len(raw)} steps, too short for seq_len={T}, "
            f"test_steps={n_test}, season={options.season}"
        )
    mean, std = raw[:n_train].mean(), raw[:n_train].std()
    series = ((raw - mean) / std).astype(np.float32)
    values = jnp.asarray(series)

    def sample_train(key, batch_size):
        starts = jax.random.randint(key, (batch_size,), 0, n_train - T)
        take = lambda s: jax.lax.dynamic_slice(values, (s,), (T + 1,))
        chunks = jax.vmap(take)(starts)
        return Batch(chunks[:, :-1, None], chunks[:, 1:, None])

    def eval_set(key, num):
        xs, ys = values[None, :-1, None], values[None, 1:, None]
        weights = (jnp.arange(len(series) - 1) >= len(series) - 1 - n_test).astype(jnp.float32)
        return Batch(xs, ys, weights[None])

    return TaskSpec(
        input_size=1,
        output_size=1,
        kind=REGRESSION,
        output_mode=SEQUENCE,
        causal=True,
        sample_train=sample_train,
        eval_set=eval_set,
        baselines={"mse (seasonal naive)": seasonal_naive_mse(series, n_test, options.season)},
        primary_metric="mse",
        higher_is_better=False,
        info={"series_length": len(series), "test_steps": n_test},
    )


TASKS = [
    Task(
        "forecast",
        "one-step-ahead forecasting of aeon's Airline series, seasonal-naive baseline",
        "many-to-many aligned regression",
        ForecastOptions,
        build_forecast,
        extra="aeon",
    )
]
