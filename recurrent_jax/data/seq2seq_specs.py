"""The registry entries of the character seq2seq tasks (``seq2seq_tasks``).

A seq2seq task's batches are ``Seq2SeqBatch`` (token ids, not the ``Batch``
of the other tasks) and its ``TaskSpec.kind`` is ``SEQ2SEQ``: only a model
of ``kind="seq2seq"`` trains on it. Training draws the "train" split; the
held-out set is drawn from a separate key (and, for addition, from the
operand pairs the train split never yields).
"""

from __future__ import annotations

import dataclasses
import functools

from recurrent_jax import _checks
from recurrent_jax.data import seq2seq_tasks as s2s
from recurrent_jax.data.base import SEQUENCE, Task, TaskSpec
from recurrent_jax.data.seq2seq_vocab import Seq2SeqVocab

SEQ2SEQ = "seq2seq"
CHAR_VOCAB = Seq2SeqVocab(tuple(s2s.CHARS), tuple(s2s.CHARS))  # ids as ``seq2seq_tasks``'


def seq2seq_spec(
    sample_train, eval_set, *, max_len: int, info: dict, vocab: Seq2SeqVocab = CHAR_VOCAB, **fields
) -> TaskSpec:
    """A seq2seq ``TaskSpec`` over ``vocab`` (the built-in tasks' shared
    character vocabulary unless given); ``max_len`` is the decoders'
    maximum output length (target + EOS); ``fields``: further ``TaskSpec``
    fields (a reader of new inputs)."""
    return TaskSpec(
        input_size=vocab.source_size,
        output_size=vocab.target_size,
        kind=SEQ2SEQ,
        output_mode=SEQUENCE,
        causal=False,
        sample_train=sample_train,
        eval_set=eval_set,
        baselines={},
        primary_metric="exact_match",
        higher_is_better=True,
        info={"max_len": max_len, **info},
        vocab=vocab,
        **fields,
    )


@dataclasses.dataclass(frozen=True)
class AdditionOptions:
    max_digits: int = 3

    def __post_init__(self):
        _checks.check_at_least("max_digits", self.max_digits, 2)


def build_addition(options: AdditionOptions) -> TaskSpec:
    n = options.max_digits
    return seq2seq_spec(
        functools.partial(_call, s2s.addition, max_digits=n, split="train"),
        functools.partial(_call, s2s.addition, max_digits=n, split="eval"),
        max_len=n + 2,
        info={"eval split": f"held-out operand pairs (1 in {s2s.HELD_OUT_EVERY})"},
    )


@dataclasses.dataclass(frozen=True)
class ReversalOptions:
    min_length: int = 1
    max_length: int = 10

    def __post_init__(self):
        _checks.check_positive("min_length", self.min_length)
        _checks.check_at_least("max_length", self.max_length, self.min_length)


def build_reversal(options: ReversalOptions) -> TaskSpec:
    lengths = dict(min_length=options.min_length, max_length=options.max_length)
    sample = functools.partial(_call, s2s.reversal, **lengths)
    return seq2seq_spec(sample, sample, max_len=options.max_length + 1, info={})


@dataclasses.dataclass(frozen=True)
class DatesOptions:
    first_year: int = 1950
    last_year: int = 2049

    def __post_init__(self):
        if not 1000 <= self.first_year <= 9999:
            _checks.fail("first_year", "a 4-digit year", self.first_year)
        if not self.first_year <= self.last_year <= 9999:
            _checks.fail("last_year", f"a 4-digit year >= {self.first_year}", self.last_year)


def build_dates(options: DatesOptions) -> TaskSpec:
    years = dict(first_year=options.first_year, last_year=options.last_year)
    sample = functools.partial(_call, s2s.dates, **years)
    return seq2seq_spec(sample, sample, max_len=11, info={"formats": list(s2s.DATE_FORMATS)})


def _call(generator, key, batch_size, **options):
    return generator(key, batch_size, **options)


TASKS = [
    Task(
        "addition",
        'integer addition as characters: "123+45" -> "168"',
        "seq2seq",
        AdditionOptions,
        build_addition,
        model_kind=SEQ2SEQ,
    ),
    Task(
        "reversal",
        'string reversal: "abc7" -> "7cba"',
        "seq2seq",
        ReversalOptions,
        build_reversal,
        model_kind=SEQ2SEQ,
    ),
    Task(
        "dates",
        'date normalisation: "3 March 1998" -> "1998-03-03"',
        "seq2seq",
        DatesOptions,
        build_dates,
        model_kind=SEQ2SEQ,
    ),
]
