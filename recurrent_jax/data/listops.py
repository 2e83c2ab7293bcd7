"""``listops``: evaluate a nested list expression, the Long Range Arena's
ListOps (Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent
Tree Learning"; Tay et al. 2021, "Long Range Arena", §3.1), generated here.

An expression is a digit 0-9 or an operator applied to 2 to ``max_args``
expressions, in prefix form with a closing bracket:
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` is 5. The operators are
``[MIN``, ``[MAX``, ``[MED`` (the median; the mean of the middle two for an
even count, rounded down) and ``[SM`` (the sum modulo 10); the label is the
value, 10 classes. As in the LRA, each node shallower than ``max_depth`` is
an operator with probability 1/4 (else a digit), the number of arguments is
uniform in [2, max_args], and only expressions of ``min_length`` to
``max_length`` tokens are kept (LRA: 10, 10, 500 and 2,000).

Token ids: 0 padding, 1-10 the digits 0-9, 11-14 the operators, 15 ``]``
(``VOCAB``); xs int32 (B, max_length) padded with 0, ``seq_lengths`` the
tokens of each row. The splits are fixed, drawn from ``seed``; an
evaluation reads the first ``data.eval_size`` rows of the test split.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data.base import (
    CLASSIFICATION,
    LAST,
    Batch,
    Rows,
    Task,
    TaskSpec,
    on_device,
    sample_rows,
)

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VOCAB = ("<pad>", *map(str, range(10)), *OPERATORS, "]")
DIGIT_0 = VOCAB.index("0")
OPERATOR_0 = VOCAB.index("[MIN")
CLOSE = VOCAB.index("]")
NUM_CLASSES = 10
OPERATOR_PROBABILITY = 0.25  # of a node above max_depth (the LRA's 1 − VALUE_P)


def median_rounded_down(args) -> int:
    """``[MED``: the median of digits, the mean of the middle two rounded
    down for an even count."""
    return int(statistics.median(args))  # args >= 0: int() rounds down


APPLY = (min, max, median_rounded_down, lambda args: sum(args) % 10)


@dataclasses.dataclass(frozen=True)
class ListOpsOptions:
    """The task's options (``config.data`` keys): split sizes, the kept
    lengths in tokens, the deepest node (the root is at depth 1), the most
    arguments of an operator, and the seed of the splits. The defaults are
    the LRA's."""

    train_size: int = 96_000
    test_size: int = 2_000
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0

    def __post_init__(self):
        _checks.check_positive_int("train_size", self.train_size)
        _checks.check_positive_int("test_size", self.test_size)
        _checks.check_positive_int("min_length", self.min_length)
        _checks.check_at_least("max_length", self.max_length, max(self.min_length, 4))
        _checks.check_at_least("max_depth", self.max_depth, 2)
        _checks.check_at_least("max_args", self.max_args, 2)
        _checks.check_non_negative_int("seed", self.seed)


class _TooLong(Exception):
    """An expression grew past ``max_length`` tokens: drawn again."""


def _expression(rng: random.Random, depth: int, options: ListOpsOptions, out: list) -> int:
    """Appends the tokens of one random expression at ``depth`` (the root's
    is 1) to ``out`` and returns its value; raises ``_TooLong`` as soon as a
    node would start past ``options.max_length`` tokens (bounding the work
    spent on expressions that are rejected anyway)."""
    if len(out) >= options.max_length:
        raise _TooLong
    draw = rng.random  # uniform integers as int(k * draw()): randrange is 10x slower
    if depth >= options.max_depth or draw() >= OPERATOR_PROBABILITY:
        digit = int(10 * draw())
        out.append(DIGIT_0 + digit)
        return digit
    operator = int(len(OPERATORS) * draw())
    out.append(OPERATOR_0 + operator)
    num_args = 2 + int((options.max_args - 1) * draw())
    args = [_expression(rng, depth + 1, options, out) for _ in range(num_args)]
    out.append(CLOSE)
    return APPLY[operator](args)


def expressions(options: ListOpsOptions, count: int, rng: random.Random):
    """``count`` expressions of ``min_length`` to ``max_length`` tokens:
    ``[(token ids, value)]``, drawn from ``rng`` (rejecting the others)."""
    found = []
    while len(found) < count:
        tokens = []
        try:
            value = _expression(rng, 1, options, tokens)
        except _TooLong:
            continue
        if options.min_length <= len(tokens) <= options.max_length:
            found.append((tokens, value))
    return found


def as_batch(found, max_length: int) -> Batch:
    """Host arrays: xs uint8 (N, max_length) padded ids, targets int32 (N,),
    seq_lengths int32 (N,)."""
    xs = np.zeros((len(found), max_length), np.uint8)
    for row, (tokens, _) in enumerate(found):
        xs[row, : len(tokens)] = tokens
    targets = np.array([value for _, value in found], np.int32)
    lengths = np.array([len(tokens) for tokens, _ in found], np.int32)
    return Batch(xs, targets, seq_lengths=lengths)


@functools.cache
def splits(options: ListOpsOptions) -> tuple[Batch, Batch]:
    """(train, test) host ``Batch``es (``as_batch``), the same for the same
    options."""
    rng = random.Random(options.seed)
    found = expressions(options, options.train_size + options.test_size, rng)
    return (
        as_batch(found[: options.train_size], options.max_length),
        as_batch(found[options.train_size :], options.max_length),
    )


def _as_ids(batch: Batch) -> Batch:
    """``batch`` with int32 ids (stored as uint8: a quarter of the memory)."""
    return batch._replace(xs=batch.xs.astype(jnp.int32))


def build_listops(options: ListOpsOptions) -> TaskSpec:
    """The task: token ids in, the value's class out (many-to-one)."""
    train, test = splits(options)
    device_train = functools.cache(lambda: on_device(train))
    device_test = functools.cache(lambda: on_device(test._replace(xs=test.xs.astype(np.int32))))

    def take(rows) -> Batch:
        xs = train.xs[rows].astype(np.int32)
        return Batch(xs, train.targets[rows], seq_lengths=train.seq_lengths[rows])

    majority = np.bincount(test.targets, minlength=NUM_CLASSES).max() / len(test.targets)
    return TaskSpec(
        input_size=len(VOCAB),
        output_size=NUM_CLASSES,
        kind=CLASSIFICATION,
        output_mode=LAST,
        causal=False,
        sample_train=lambda key, n: _as_ids(sample_rows(device_train(), key, n)),
        eval_set=lambda key, n: jax.tree_util.tree_map(lambda a: a[:n], device_test()),
        baselines={"accuracy (majority class)": float(majority)},
        primary_metric="accuracy",
        higher_is_better=True,
        info={
            "train_size": options.train_size,
            "test_size": options.test_size,
            "mean_length": float(train.seq_lengths.mean()),
        },
        input_vocab=len(VOCAB),
        train_rows=Rows(options.train_size, take),
    )


TASKS = [
    Task(
        "listops",
        "ListOps: the value of a nested MIN/MAX/MED/SUM_MOD expression (Long Range Arena)",
        "many-to-one classification of token ids",
        ListOpsOptions,
        build_listops,
    )
]
