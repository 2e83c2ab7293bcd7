"""Demo: an LSTM learns the adding problem (Hochreiter & Schmidhuber 1997).

    python -m recurrent_jax.demo --steps 1500 --seq-len 50

Each input is a sequence xs (B, T, 2): channel 0 holds values drawn uniformly
from [0, 1], channel 1 marks exactly two positions (one in each half of the
sequence). The target is the sum of the two marked values. Predicting the
mean, 1.0, always scores MSE = Var(U + U') = 1/6 ≈ 0.167: a model beats that
only by remembering the marked values across the sequence.

Data is generated on device from a PRNG key, and training runs in chunks of
steps under ``jax.lax.scan``; the host only prints between chunks.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import recurrent_jax as rj

BASELINE_MSE = 1.0 / 6.0  # always predicting 1.0, the mean of the target


class DemoConfig(NamedTuple):
    steps: int = 1500
    seq_len: int = 50
    hidden: int = 64
    batch: int = 64
    seed: int = 0
    learning_rate: float = 1e-2
    steps_per_chunk: int = 100
    test_batch: int = 1024


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar, the number of updates done
    params: dict
    opt_state: optax.OptState


def adding_problem(key: jax.Array, batch: int, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Returns xs (batch, seq_len, 2) and targets (batch,)."""
    k_values, k_first, k_second = jax.random.split(key, 3)
    values_BxT = jax.random.uniform(k_values, (batch, seq_len))
    half = seq_len // 2
    first_B = jax.random.randint(k_first, (batch,), 0, half)
    second_B = jax.random.randint(k_second, (batch,), half, seq_len)
    steps_T = jnp.arange(seq_len)
    marks_BxT = (steps_T == first_B[:, None]) | (steps_T == second_B[:, None])
    marks_BxT = marks_BxT.astype(values_BxT.dtype)
    xs_BxTx2 = jnp.stack([values_BxT, marks_BxT], axis=-1)
    return xs_BxTx2, (values_BxT * marks_BxT).sum(-1)


def init_params(key: jax.Array, cell: rj.Cell, hidden: int) -> dict:
    """LSTM params for 2 input features and a linear readout (hidden -> 1)."""
    k_cell, k_readout = jax.random.split(key)
    w_out = jax.random.normal(k_readout, (hidden,)) / jnp.sqrt(hidden)
    # The readout bias starts at the target mean, so training starts at the baseline.
    return {"cell": cell.init(k_cell, input_size=2), "w_out": w_out, "b_out": jnp.ones(())}


def predict(cell: rj.Cell, params: dict, xs_BxTx2: jax.Array) -> jax.Array:
    """The readout of the final hidden state, (B,)."""
    final, _ = rj.unroll(cell, params["cell"], xs_BxTx2)
    return final.h @ params["w_out"] + params["b_out"]


def mse(cell: rj.Cell, params: dict, xs: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(predict(cell, params, xs) - targets))


def train_step(cell, optimizer, config: DemoConfig, data_key, state: TrainState, _):
    """One Adam update on a fresh batch drawn from ``fold_in(data_key, step)``."""
    xs, targets = adding_problem(
        jax.random.fold_in(data_key, state.step), config.batch, config.seq_len
    )
    loss, grads = jax.value_and_grad(lambda p: mse(cell, p, xs, targets))(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss


def train_chunk(cell, optimizer, config, data_key, state: TrainState, num_steps: int):
    """``num_steps`` updates under one ``lax.scan``; returns the state and the losses."""
    body = lambda s, x: train_step(cell, optimizer, config, data_key, s, x)
    return jax.lax.scan(body, state, None, length=num_steps)


def chunk_lengths(steps: int, steps_per_chunk: int) -> list[int]:
    full, rest = divmod(steps, steps_per_chunk)
    return [steps_per_chunk] * full + ([rest] if rest else [])


def run(config: DemoConfig) -> float:
    """Trains, prints progress per chunk, and returns the test MSE."""
    cell = rj.cells.lstm(config.hidden)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
    init_key, data_key, test_key = jax.random.split(jax.random.key(config.seed), 3)
    params = init_params(init_key, cell, config.hidden)
    state = TrainState(jnp.array(0, jnp.int32), params, optimizer.init(params))
    chunk = jax.jit(
        lambda state, n: train_chunk(cell, optimizer, config, data_key, state, n),
        static_argnums=1,
    )

    print(f"adding problem: T={config.seq_len}, hidden={config.hidden}, batch={config.batch}")
    print(f"baseline MSE (always predict 1.0): {BASELINE_MSE:.4f}")
    start = time.perf_counter()
    for n in chunk_lengths(config.steps, config.steps_per_chunk):
        state, losses = chunk(state, n)
        print(
            f"step {int(state.step):5d}  train MSE {float(losses.mean()):.5f}"
            f"  ({time.perf_counter() - start:.1f}s)"
        )
    xs, targets = adding_problem(test_key, config.test_batch, config.seq_len)
    test_mse = float(jax.jit(lambda p: mse(cell, p, xs, targets))(state.params))
    elapsed = time.perf_counter() - start
    print(f"test MSE {test_mse:.5f}  vs baseline {BASELINE_MSE:.5f}  ({elapsed:.1f}s)")
    return test_mse


def parse_args(argv=None) -> DemoConfig:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="recurrent-jax", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    args = parser.parse_args(argv)
    for name in ("steps", "seq_len", "hidden", "batch"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')}: expected a positive int")
    if args.seq_len < 2:
        parser.error("--seq-len: expected at least 2 (two marked positions)")
    return defaults._replace(**vars(args))


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
