"""Synthetic tasks generated on device from a key: adding, copy, parity."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.data.base import (
    CLASSIFICATION,
    LAST,
    REGRESSION,
    SEQUENCE,
    Batch,
    Task,
    TaskSpec,
    one_hot,
)
from recurrent_jax.sequence import length_mask

# --- adding problem -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AddingOptions:
    seq_len: int = 100

    def __post_init__(self):
        _checks.check_at_least("seq_len", self.seq_len, 2)


def adding_batch(key: jax.Array, batch_size: int, seq_len: int) -> Batch:
    """The adding problem (Hochreiter & Schmidhuber 1997).

    xs (B, T, 2): channel 0 values ~ U[0, 1], channel 1 marks one position in
    each half of the sequence; targets (B, 1): the sum of the two marked
    values. Predicting the mean (1.0) scores MSE = 1/6.
    """
    k_values, k_first, k_second = jax.random.split(key, 3)
    values_BxT = jax.random.uniform(k_values, (batch_size, seq_len))
    half = seq_len // 2
    first_B = jax.random.randint(k_first, (batch_size,), 0, half)
    second_B = jax.random.randint(k_second, (batch_size,), half, seq_len)
    steps_T = jnp.arange(seq_len)
    marks_BxT = (steps_T[None] == first_B[:, None]) | (steps_T[None] == second_B[:, None])
    marks_BxT = marks_BxT.astype(jnp.float32)
    xs_BxTx2 = jnp.stack([values_BxT, marks_BxT], axis=-1)
    return Batch(xs_BxTx2, (values_BxT * marks_BxT).sum(-1, keepdims=True))


def build_adding(options: AddingOptions) -> TaskSpec:
    sample = lambda key, n: adding_batch(key, n, options.seq_len)
    return TaskSpec(
        input_size=2,
        output_size=1,
        kind=REGRESSION,
        output_mode=LAST,
        causal=False,
        sample_train=sample,
        eval_set=sample,
        baselines={"mse (predict 1.0)": 1.0 / 6.0},
        primary_metric="mse",
        higher_is_better=False,
    )


# --- copy / recall with a delay ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CopyOptions:
    num_symbols: int = 8
    length: int = 10
    delay: int = 20

    def __post_init__(self):
        _checks.check_at_least("num_symbols", self.num_symbols, 2)
        _checks.check_positive("length", self.length)
        _checks.check_non_negative("delay", self.delay)


def copy_batch(key: jax.Array, batch_size: int, num_symbols: int, length: int, delay: int):
    """Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    T = 2·length + delay. Input ids: ``length`` symbols in [1, S], ``delay``
    blanks (0), a go marker (S+1), then ``length - 1`` blanks. Targets: the
    symbols at the last ``length`` steps (ids shifted to [0, S)); only those
    steps are scored (``weights``). xs is one-hot (B, T, S+2).
    """
    symbols_BxL = jax.random.randint(key, (batch_size, length), 1, num_symbols + 1)
    blanks = jnp.zeros((batch_size, delay), jnp.int32)
    go = jnp.full((batch_size, 1), num_symbols + 1, jnp.int32)
    tail = jnp.zeros((batch_size, length - 1), jnp.int32)
    ids_BxT = jnp.concatenate([symbols_BxL, blanks, go, tail], axis=1)
    lead = jnp.zeros((batch_size, length + delay), jnp.int32)
    targets_BxT = jnp.concatenate([lead, symbols_BxL - 1], axis=1)
    weights_T = jnp.concatenate([jnp.zeros(length + delay), jnp.ones(length)])
    weights_BxT = jnp.broadcast_to(weights_T, targets_BxT.shape)
    return Batch(one_hot(ids_BxT, num_symbols + 2), targets_BxT, weights_BxT)


def build_copy(options: CopyOptions) -> TaskSpec:
    s = options.num_symbols
    sample = lambda key, n: copy_batch(key, n, s, options.length, options.delay)
    return TaskSpec(
        input_size=s + 2,
        output_size=s,
        kind=CLASSIFICATION,
        output_mode=SEQUENCE,
        causal=True,
        sample_train=sample,
        eval_set=sample,
        baselines={"accuracy (guess)": 1.0 / s, "loss (guess)": math.log(s)},
        primary_metric="accuracy",
        higher_is_better=True,
    )


# --- parity -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParityOptions:
    seq_len: int = 20

    def __post_init__(self):
        _checks.check_positive("seq_len", self.seq_len)


def parity_batch(
    key: jax.Array, batch_size: int, seq_len: int, variable_lengths: bool = False
) -> Batch:
    """xs (B, T, 1) random bits; targets (B,) their sum mod 2.

    With ``variable_lengths`` each sequence has a length drawn uniformly from
    [1, T] (padding masked): the short ones give the gradient signal that
    fixed-length parity lacks, an implicit curriculum.
    """
    k_bits, k_len = jax.random.split(key)
    bits_BxT = jax.random.bernoulli(k_bits, 0.5, (batch_size, seq_len)).astype(jnp.int32)
    if not variable_lengths:
        return Batch(bits_BxT[..., None].astype(jnp.float32), bits_BxT.sum(-1) % 2)
    lengths_B = jax.random.randint(k_len, (batch_size,), 1, seq_len + 1)
    valid_BxT = length_mask(lengths_B, seq_len)
    bits_BxT = jnp.where(valid_BxT, bits_BxT, 0)
    xs = bits_BxT[..., None].astype(jnp.float32)
    return Batch(xs, bits_BxT.sum(-1) % 2, seq_lengths=lengths_B.astype(jnp.int32))


def build_parity(options: ParityOptions) -> TaskSpec:
    return TaskSpec(
        input_size=1,
        output_size=2,
        kind=CLASSIFICATION,
        output_mode=LAST,
        causal=False,
        sample_train=lambda key, n: parity_batch(key, n, options.seq_len, True),
        eval_set=lambda key, n: parity_batch(key, n, options.seq_len),
        baselines={"accuracy (guess)": 0.5},
        primary_metric="accuracy",
        higher_is_better=True,
    )


TASKS = [
    Task(
        "adding",
        "adding problem: sum of two marked values (Hochreiter & Schmidhuber 1997)",
        "many-to-one regression",
        AddingOptions,
        build_adding,
    ),
    Task(
        "copy",
        "copy memory: recall a symbol sequence after a delay",
        "many-to-many aligned classification",
        CopyOptions,
        build_copy,
    ),
    Task(
        "parity",
        "parity of a bit sequence",
        "many-to-one classification",
        ParityOptions,
        build_parity,
    ),
]
