"""Character-level language modelling on a text file (bits per character).

The default text ships with the package: ``texts/founding.txt`` (public
domain: the US Declaration of Independence, the Constitution's preamble,
the Gettysburg Address and two Shakespeare sonnets). The last
``valid_fraction`` of the characters is held out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data.base import (
    CLASSIFICATION,
    SEQUENCE,
    Batch,
    DataError,
    Task,
    TaskSpec,
    one_hot,
)

DEFAULT_TEXT = Path(__file__).parent / "texts" / "founding.txt"


@dataclasses.dataclass(frozen=True)
class TextOptions:
    path: str = ""  # empty: the shipped default text
    seq_len: int = 64
    valid_fraction: float = 0.1

    def __post_init__(self):
        _checks.check_positive("seq_len", self.seq_len)
        if not 0.0 < self.valid_fraction < 1.0:
            _checks.fail("valid_fraction", "a fraction in (0, 1)", self.valid_fraction)


@functools.cache
def load_text(path: str, seq_len: int, valid_fraction: float):
    """(train ids, valid ids, vocabulary) as numpy int32 / a str of chars."""
    file = Path(path) if path else DEFAULT_TEXT
    if not file.is_file():
        raise DataError(f"config.data.path: no such text file {str(file)!r}")
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"config.data.path: the text file {str(file)!r} is empty")
    vocab = "".join(sorted(set(text)))
    ids = np.array([vocab.index(c) for c in text], np.int32)
    num_valid = int(len(ids) * valid_fraction)
    train, valid = ids[: len(ids) - num_valid], ids[len(ids) - num_valid :]
    if min(len(train), len(valid)) < seq_len + 1:
        raise DataError(
            f"config.data.seq_len: expected at most {min(len(train), len(valid)) - 1} "
            f"for {str(file)!r} ({len(ids)} chars, valid_fraction {valid_fraction}), got {seq_len}"
        )
    return train, valid, vocab


def windows(ids: jax.Array, starts: jax.Array, seq_len: int, vocab_size: int) -> Batch:
    """xs: one-hot chars [s, s+T), targets: the next chars [s+1, s+T]."""
    take = lambda s: jax.lax.dynamic_slice(ids, (s,), (seq_len + 1,))
    chunks = jax.vmap(take)(starts)
    return Batch(one_hot(chunks[:, :-1], vocab_size), chunks[:, 1:])


def unigram_bits(train: np.ndarray, valid: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    probs = counts / counts.sum()
    return float(-np.mean(np.log2(probs[valid])))


def build_text(options: TextOptions) -> TaskSpec:
    train, valid, vocab = load_text(options.path, options.seq_len, options.valid_fraction)
    size, T = len(vocab), options.seq_len
    train_ids, valid_ids = jnp.asarray(train), jnp.asarray(valid)

    def sample_train(key, batch_size):
        starts = jax.random.randint(key, (batch_size,), 0, len(train) - T)
        return windows(train_ids, starts, T, size)

    def eval_set(key, num):
        count = min(num, (len(valid) - 1) // T)
        return windows(valid_ids, jnp.arange(count) * T, T, size)

    return TaskSpec(
        input_size=size,
        output_size=size,
        kind=CLASSIFICATION,
        output_mode=SEQUENCE,
        causal=True,
        sample_train=sample_train,
        eval_set=eval_set,
        baselines={
            "bits_per_char (unigram)": unigram_bits(train, valid, size),
            "bits_per_char (uniform)": math.log2(size),
        },
        primary_metric="bits_per_char",
        higher_is_better=False,
        bits_per_symbol=True,
        info={"vocab_size": size, "train_chars": len(train), "valid_chars": len(valid)},
        decode=lambda ids: "".join(vocab[int(i)] for i in ids),
    )


TASKS = [
    Task(
        "text",
        "character-level language modelling of a text file (default: shipped public-domain text)",
        "many-to-many aligned (next character)",
        TextOptions,
        build_text,
    )
]
