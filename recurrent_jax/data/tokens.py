"""Text to token ids: by characters, by whitespace words (a vocabulary
built on the training split only), or by a pretrained tokenizer of the
``tokenizers`` / ``transformers`` packages named by its hub name.

Ids 0 and 1 of a built vocabulary are padding and the unknown token; the
others go by frequency in the training texts (ties by the token), up to
``max_size``.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from recurrent_jax.data import readers
from recurrent_jax.data.base import DataError, MissingExtraError

PAD, UNK = "<pad>", "<unk>"
BUILT = ("chars", "words")  # the tokenisations built on the training split
CHOICES = "'chars', 'words' or a pretrained tokenizer's hub name (tokenizers or transformers)"


class Tokenizer(NamedTuple):
    """``encode(text) -> ids`` (int32), ``decode(ids) -> text`` and the
    vocabulary size ``size``."""

    encode: object
    decode: object
    size: int
    name: str


def make_tokenizer(how: str, training_texts: Iterable[str], max_size: int | None) -> Tokenizer:
    """The tokenizer ``how`` names: "chars", "words" (built on
    ``training_texts``) or a pretrained tokenizer's hub name."""
    if how in BUILT:
        return built(how, training_texts, max_size)
    near = difflib.get_close_matches(how, BUILT, n=1, cutoff=0.75)
    if near or not how.strip():
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DataError(f"data.tokens: expected {CHOICES}, got {how!r}{hint}")
    return pretrained(how)


def pieces(text: str, how: str) -> list[str]:
    return list(text) if how == "chars" else text.split()


def built(how: str, training_texts: Iterable[str], max_size: int | None) -> Tokenizer:
    counts = Counter(t for text in training_texts for t in pieces(text, how))
    counts.pop(PAD, None)
    counts.pop(UNK, None)
    if not counts:
        raise DataError(f"data.tokens: the training texts hold no {how}")
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    limit = None if max_size is None else max(max_size - 2, 1)
    vocab = [PAD, UNK, *ranked[:limit]]
    index = {token: i for i, token in enumerate(vocab)}
    joiner = "" if how == "chars" else " "

    def encode(text: str) -> np.ndarray:
        return np.array([index.get(t, 1) for t in pieces(text, how)], np.int32)

    def decode(ids) -> str:
        return joiner.join(vocab[int(i)] for i in ids if int(i) != 0)

    return Tokenizer(encode, decode, len(vocab), how)


def pretrained(name: str) -> Tokenizer:
    """A pretrained tokenizer by hub name (``tokenizers``, else
    ``transformers``; downloaded once, then cached by them). Only data is
    read (``tokenizer.json`` and the like): no code from the hub runs."""
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    if tokenizers is not None:
        try:
            tok = tokenizers.Tokenizer.from_pretrained(name)
        except Exception as error:  # the hub's errors are many
            raise DataError(
                f"data.tokens: expected {CHOICES}; no tokenizer {name!r} could be loaded "
                f"({readers.one_line(error)})"
            ) from None
        return Tokenizer(
            lambda text: np.asarray(tok.encode(text).ids, np.int32),
            lambda ids: tok.decode([int(i) for i in ids]),
            tok.get_vocab_size(),
            name,
        )
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingExtraError(
            f"data.tokens: expected {CHOICES}, got {name!r}: a pretrained tokenizer needs "
            "tokenizers or transformers: pip install tokenizers"
        ) from None
    try:  # no code from the hub: trust_remote_code stays off
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except Exception as error:  # the hub's errors are many
        raise DataError(
            f"data.tokens: expected {CHOICES}; no tokenizer {name!r} could be loaded "
            f"({readers.one_line(error)})"
        ) from None
    return Tokenizer(
        lambda text: np.asarray(tok.encode(text, add_special_tokens=False), np.int32),
        lambda ids: tok.decode([int(i) for i in ids]),
        len(tok),
        name,
    )


def pad(sequences: list[np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) ids padded with 0 (cut after ``max_length``) and (N,) lengths."""
    lengths = np.array([min(len(s), max_length) for s in sequences], np.int32)
    ids = np.zeros((len(sequences), max(int(lengths.max(initial=0)), 1)), np.int32)
    for n, s in enumerate(sequences):
        ids[n, : lengths[n]] = s[: lengths[n]]
    return ids, lengths
