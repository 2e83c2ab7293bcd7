"""Language modelling on text files: by characters (bits per character)
or by words (a vocabulary of the training text, ``data.tokens="words"``),
or with a pretrained tokenizer (``data.tokens`` its hub name).

The default text ships with the package: ``texts/founding.txt`` (public
domain: the US Declaration of Independence, the Constitution's preamble,
the Gettysburg Address and two Shakespeare sonnets). The held-out text is
``data.eval_path``, else the last ``valid_fraction`` of the text.
Characters are one-hot inputs; words and pretrained tokens are ids that the
model embeds (``model.embedding_size``).
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
from recurrent_jax.data import readers, tokens
from recurrent_jax.data.base import (
    CLASSIFICATION,
    SEQUENCE,
    Batch,
    DataError,
    Inputs,
    Rows,
    Task,
    TaskSpec,
    on_device,
    one_hot,
    path_option,
)

one_hot_ids = one_hot  # ``lm_spec``'s argument of that name shadows it there

DEFAULT_TEXT = Path(__file__).parent / "texts" / "founding.txt"


@dataclasses.dataclass(frozen=True)
class TextOptions:
    path: str = path_option()  # empty: the shipped default text
    seq_len: int = 64
    valid_fraction: float = 0.1
    eval_path: str = path_option()  # empty: the last valid_fraction of path
    tokens: str = "chars"  # "chars", "words" or a pretrained tokenizer's name
    max_vocab: int | None = None  # words: the most frequent, then <unk>

    def __post_init__(self):
        _checks.check_positive("seq_len", self.seq_len)
        if not 0.0 < self.valid_fraction < 1.0:
            _checks.fail("valid_fraction", "a fraction in (0, 1)", self.valid_fraction)
        if self.max_vocab is not None:
            _checks.check_at_least("max_vocab", self.max_vocab, 3)


@functools.cache
def load_text(path: str, seq_len: int, valid_fraction: float):
    """(train ids, valid ids, vocabulary) as numpy int32 / a str of chars."""
    text = read_text(path or str(DEFAULT_TEXT))
    vocab = "".join(sorted(set(text)))
    ids = np.array([vocab.index(c) for c in text], np.int32)
    num_valid = int(len(ids) * valid_fraction)
    train, valid = ids[: len(ids) - num_valid], ids[len(ids) - num_valid :]
    check_windows(train, valid, seq_len, f"config.data.path {str(path or DEFAULT_TEXT)!r}")
    return train, valid, vocab


def check_windows(train, valid, seq_len: int, source: str) -> None:
    """Both splits hold a window of ``seq_len`` + 1 tokens."""
    longest = min(len(train), len(valid)) - 1
    if longest >= seq_len:
        return
    if longest < 1:
        raise DataError(
            f"{source}: too short: its training and held-out parts hold {len(train)} and "
            f"{len(valid)} tokens, expected at least 2 in each (seq_len + 1 = {seq_len + 1} "
            "to train as configured); give more text"
        )
    raise DataError(
        f"config.data.seq_len: expected at most {longest} for {source} ({len(train)} training "
        f"and {len(valid)} held-out tokens), got {seq_len}"
    )


def windows(ids: jax.Array, starts: jax.Array, seq_len: int, vocab_size: int) -> Batch:
    """xs: one-hot chars [s, s+T), targets: the next chars [s+1, s+T]."""
    take = lambda s: jax.lax.dynamic_slice(ids, (s,), (seq_len + 1,))
    chunks = jax.vmap(take)(starts)
    return Batch(one_hot(chunks[:, :-1], vocab_size), chunks[:, 1:])


def token_windows(ids: jax.Array, starts: jax.Array, seq_len: int, vocab_size: int) -> Batch:
    """xs: token ids [s, s+T) (the model embeds them), targets [s+1, s+T]."""
    take = lambda s: jax.lax.dynamic_slice(ids, (s,), (seq_len + 1,))  # noqa: E731
    chunks = jax.vmap(take)(starts)
    return Batch(chunks[:, :-1], chunks[:, 1:])


def unigram_bits(train: np.ndarray, valid: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    probs = counts / counts.sum()
    return float(-np.mean(np.log2(probs[valid])))


def read_text(path: str, key: str = "data.path") -> str:
    """The UTF-8 text of the regular file ``path`` (named ``config.<key>``)."""
    text = readers.read_text_file(path, f"config.{key}")
    if not text.strip():
        raise DataError(f"config.{key}: the text file {str(path)!r} is empty")
    return text


def build_text(options: TextOptions) -> TaskSpec:
    if options.tokens == "chars" and not options.eval_path:
        train, valid, vocab = load_text(options.path, options.seq_len, options.valid_fraction)
        decode = lambda ids: "".join(vocab[int(i)] for i in ids)  # noqa: E731
        return lm_spec(
            train,
            valid,
            len(vocab),
            decode,
            options.seq_len,
            one_hot=True,
            tokenize=functools.partial(char_ids, vocab),
        )
    text = read_text(options.path or str(DEFAULT_TEXT))
    if options.eval_path:
        train_text, valid_text = text, read_text(options.eval_path, "data.eval_path")
    else:
        cut = len(text) - int(len(text) * options.valid_fraction)
        train_text, valid_text = text[:cut], text[cut:]
    tokenizer = tokens.make_tokenizer(options.tokens, [train_text], options.max_vocab)
    train, valid = tokenizer.encode(train_text), tokenizer.encode(valid_text)
    one_hot = options.tokens == "chars"
    source = f"config.data.path {options.path or str(DEFAULT_TEXT)!r}"
    return lm_spec(
        train,
        valid,
        tokenizer.size,
        tokenizer.decode,
        options.seq_len,
        one_hot=one_hot,
        source=source,
        tokenize=tokenizer.encode,
    )


def char_ids(vocab: str, text: str) -> np.ndarray:
    """The ids of the characters of ``text`` in ``vocab`` (the training
    text's characters); a character it lacks is a one-line ``DataError``."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted({c for c in text if c not in index})
    if unknown:
        raise DataError(
            f"text: expected characters of the training text, got {len(unknown)} it does not "
            f"hold: {''.join(unknown)[:40]!r}"
        )
    return np.array([index[c] for c in text], np.int32)


def lm_spec(
    train,
    valid,
    size: int,
    decode,
    seq_len: int,
    *,
    one_hot: bool,
    source: str = "the text",
    tokenize=None,
) -> TaskSpec:
    """Next-token prediction over windows of ``seq_len`` ids of the
    ``train`` and ``valid`` id streams: one-hot inputs, or ids the model
    embeds (``source`` names the text in errors; ``tokenize``, text -> ids,
    reads new text for ``Inputs``). The primary metric is bits per
    character (one-hot characters) or perplexity (tokens)."""
    T = seq_len
    check_windows(train, valid, T, source)
    train, valid_ids = np.asarray(train, np.int32), jnp.asarray(valid)
    train_ids = functools.cache(lambda: on_device(train))  # uploaded when first drawn from
    window = windows if one_hot else token_windows

    def sample_train(key, batch_size):
        starts = jax.random.randint(key, (batch_size,), 0, len(train) - T)
        return window(train_ids(), starts, T, size)

    def take(starts):  # the streamed path: windows gathered on the host
        chunks = train[np.asarray(starts)[:, None] + np.arange(T + 1)]
        xs = np.eye(size, dtype=np.float32)[chunks[:, :-1]] if one_hot else chunks[:, :-1]
        return Batch(xs, chunks[:, 1:])

    def eval_set(key, num):
        count = min(num, (len(valid) - 1) // T)
        return window(valid_ids, jnp.arange(count) * T, T, size)

    unigram = unigram_bits(train, valid, size)
    baselines = (
        {"bits_per_char (unigram)": unigram, "bits_per_char (uniform)": math.log2(size)}
        if one_hot
        else {"perplexity (unigram)": 2.0**unigram, "perplexity (uniform)": float(size)}
    )
    return TaskSpec(
        input_size=size,
        output_size=size,
        kind=CLASSIFICATION,
        output_mode=SEQUENCE,
        causal=True,
        sample_train=sample_train,
        eval_set=eval_set,
        baselines=baselines,
        primary_metric="bits_per_char" if one_hot else "perplexity",
        higher_is_better=False,
        bits_per_symbol=one_hot,
        perplexity=not one_hot,
        info={"vocab_size": size, "train_tokens": len(train), "valid_tokens": len(valid)},
        decode=decode,
        input_vocab=None if one_hot else size,
        train_rows=Rows(len(train) - T, take),
        inputs=Inputs(
            encode=(lambda ids, lengths: one_hot_ids(ids, size)) if one_hot else None,
            tokenize=tokenize,
        ),
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
