"""Character-level sequence-to-sequence tasks generated on device from a key.

- ``addition``: "123+45" -> "168", operands of 1 to ``max_digits`` digits
  (the digit count uniform, then the number uniform among those).
- ``reversal``: "abc7" -> "7cba", lengths uniform in [min_length, max_length].
- ``dates``: "3 March 1998", "March 3, 1998", "3 Mar 1998", "03/03/1998",
  "3 march 1998" -> "1998-03-03", days uniform over a proleptic Gregorian
  calendar from ``first_year`` to ``last_year``.

All share one character vocabulary (``PAD_ID`` 0, ``BOS_ID`` 1, ``EOS_ID``
2, then ``CHARS``). A batch holds the source without BOS/EOS, the decoder
input ``BOS + target`` and the decoder output ``target + EOS``, each padded
with ``PAD_ID`` to a width fixed by the task's options. Generators are pure
JAX (jit them with the batch size and options static).
"""

from __future__ import annotations

import string
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax.sequence import length_mask

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CHARS = string.digits + "+-/,. " + string.ascii_lowercase + string.ascii_uppercase
VOCAB_SIZE = 3 + len(CHARS)
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ALPHABET = string.ascii_lowercase + string.digits
DATE_FORMATS = ("D Month YYYY", "Month D, YYYY", "D Mon YYYY", "DD/MM/YYYY", "D month YYYY")


class Seq2SeqBatch(NamedTuple):
    """``src`` int32 (B, S) and ``src_lengths`` (B,); ``tgt_in`` (B, T) =
    BOS + target; ``tgt_out`` (B, T) = target + EOS; ``tgt_lengths`` (B,)
    = target length + 1 (the valid steps of both)."""

    src: jax.Array
    src_lengths: jax.Array
    tgt_in: jax.Array
    tgt_out: jax.Array
    tgt_lengths: jax.Array


# --- the vocabulary --------------------------------------------------------------


def char_ids(text: str) -> np.ndarray:
    """Ids of the characters of ``text`` (each must be in ``CHARS``)."""
    bad = sorted(set(text) - set(CHARS))
    if bad:
        raise ValueError(f"text: characters {bad} are not in the vocabulary, got {text!r}")
    return np.array([3 + CHARS.index(c) for c in text], np.int32)


def encode(texts, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Strings to ``(ids (N, width), lengths (N,))``, padded with PAD_ID."""
    rows = [char_ids(t) for t in texts]
    lengths = np.array([len(r) for r in rows], np.int32)
    width = int(lengths.max(initial=0)) if width is None else width
    if lengths.size and lengths.max() > width:
        raise ValueError(f"width: expected at least {lengths.max()}, got {width}")
    ids = np.full((len(rows), width), PAD_ID, np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def decode(ids, lengths=None) -> list[str]:
    """Ids (N, L) back to strings; each row stops at its length, at EOS or at
    PAD (whichever comes first); BOS is skipped."""
    ids = np.asarray(ids)
    out = []
    for i, row in enumerate(ids):
        row = row if lengths is None else row[: int(np.asarray(lengths)[i])]
        chars = []
        for t in row:
            if t in (EOS_ID, PAD_ID):
                break
            if t != BOS_ID:
                chars.append(CHARS[int(t) - 3])
        out.append("".join(chars))
    return out


# --- pieces: (ids (B, w), lengths (B,)) ------------------------------------------


def _literal(text: str, batch: int):
    ids = jnp.broadcast_to(jnp.asarray(char_ids(text)), (batch, len(text)))
    return ids, jnp.full((batch,), len(text), jnp.int32)


def _number(n, width: int, *, pad: bool = False):
    """Decimal digits of ``n`` (B,) in ``width`` places; without ``pad`` the
    leading zeros are dropped (0 keeps one digit)."""
    powers = 10 ** jnp.arange(width - 1, -1, -1, dtype=jnp.int32)
    digits = (n[:, None] // powers[None, :]) % 10 + 3
    if pad:
        return digits, jnp.full(n.shape, width, jnp.int32)
    count = jnp.maximum(1, jnp.sum(n[:, None] >= powers[None, :], -1)).astype(jnp.int32)
    index = jnp.arange(width)[None, :] + (width - count)[:, None]
    shifted = jnp.take_along_axis(digits, jnp.minimum(index, width - 1), axis=1)
    return jnp.where(length_mask(count, width), shifted, PAD_ID), count


def _table(words, index):
    """Words from a fixed list, ``index`` (B,) choosing one per row."""
    ids, lengths = encode(words)
    return jnp.asarray(ids)[index], jnp.asarray(lengths)[index]


def _concat(pieces, width: int):
    """Pieces laid end to end into (B, width) with PAD after the end."""
    batch = pieces[0][0].shape[0]
    out = jnp.full((batch, width + 1), PAD_ID, jnp.int32)
    offset = jnp.zeros((batch,), jnp.int32)
    rows = jnp.arange(batch)[:, None]
    for ids, lengths in pieces:
        steps = jnp.arange(ids.shape[1])[None, :]
        position = jnp.where(steps < lengths[:, None], offset[:, None] + steps, width)
        out = out.at[rows, position].set(ids.astype(jnp.int32))
        offset = offset + lengths
    return out[:, :width], offset


def _batch(src, src_lengths, tgt, tgt_lengths) -> Seq2SeqBatch:
    """Adds BOS and EOS around the target."""
    batch, width = tgt.shape
    bos = jnp.full((batch, 1), BOS_ID, jnp.int32)
    tgt_in = jnp.concatenate([bos, tgt], 1)
    tgt_out = jnp.concatenate([tgt, jnp.full((batch, 1), PAD_ID, jnp.int32)], 1)
    tgt_out = tgt_out.at[jnp.arange(batch), tgt_lengths].set(EOS_ID)
    tgt_in = jnp.where(length_mask(tgt_lengths + 1, width + 1), tgt_in, PAD_ID)
    return Seq2SeqBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths + 1)


# --- the tasks --------------------------------------------------------------------

_HASH_A, _HASH_B, HELD_OUT_EVERY = 7919, 104729, 20


def is_held_out(a, b):
    """The addition pairs reserved for evaluation: about 1 in 20 of the pairs
    with a multi-digit operand, by a hash of the operands. The 100
    single-digit pairs all stay in training: holding a few of those out
    would test memorised facts the model was never shown, not addition."""
    hashed = (a * _HASH_A + b * _HASH_B) % HELD_OUT_EVERY == 0
    return hashed & (jnp.maximum(a, b) >= 10)


def _operand(key, batch, max_digits):
    k_count, k_value = jax.random.split(key)
    count = jax.random.randint(k_count, (batch,), 1, max_digits + 1)
    low = jnp.where(count == 1, 0, 10 ** (count - 1))
    return jax.random.randint(k_value, (batch,), low, 10**count)


def addition(key, batch_size: int, *, max_digits: int = 3, split: str = "train"):
    """``"a+b"`` -> ``"a+b"``'s decimal sum. ``split`` "train" never yields a
    held-out pair (``is_held_out``), "eval" only held-out pairs, "all" any.

    Widths: source 2·max_digits + 1, target max_digits + 2 (with BOS/EOS)."""
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split: expected one of ['all', 'eval', 'train'], got {split!r}")
    if split != "all" and max_digits < 2:
        raise ValueError(f"max_digits: split {split!r} needs at least 2, got {max_digits}")
    k_a, k_b = jax.random.split(key)
    a = _operand(k_a, batch_size, max_digits)
    b = _operand(k_b, batch_size, max_digits)
    top = 10**max_digits
    if split == "train":  # moving b by one leaves the held-out residue class
        b = jnp.where(is_held_out(a, b), (b + 1) % top, b)
    elif split == "eval":  # 9 is its own inverse mod 20 and _HASH_B % 20 == 9
        residue = (-(a * _HASH_A) * 9) % HELD_OUT_EVERY
        b = b - b % HELD_OUT_EVERY + residue
        b = jnp.where(b >= top, b - HELD_OUT_EVERY, b)
        # a pair of single digits is never held out: lift b to two digits
        # within the same residue class.
        b = jnp.where((a < 10) & (b < 10), b + HELD_OUT_EVERY, b)
    src, src_lengths = _concat(
        [_number(a, max_digits), _literal("+", batch_size), _number(b, max_digits)],
        2 * max_digits + 1,
    )
    tgt, tgt_lengths = _number(a + b, max_digits + 1)
    return _batch(src, src_lengths, tgt, tgt_lengths)


def reversal(key, batch_size: int, *, min_length: int = 1, max_length: int = 10, alphabet=ALPHABET):
    """A random string of ``alphabet`` characters -> the string reversed."""
    if not 1 <= min_length <= max_length:
        raise ValueError(
            f"min_length: expected 1 <= min_length <= max_length ({max_length}), got {min_length}"
        )
    symbols = jnp.asarray(char_ids(alphabet))
    k_len, k_sym = jax.random.split(key)
    lengths = jax.random.randint(k_len, (batch_size,), min_length, max_length + 1)
    src = symbols[jax.random.randint(k_sym, (batch_size, max_length), 0, len(alphabet))]
    steps = jnp.arange(max_length)[None, :]
    valid = steps < lengths[:, None]
    src = jnp.where(valid, src, PAD_ID)
    backward = jnp.clip(lengths[:, None] - 1 - steps, 0, max_length - 1)
    tgt = jnp.where(valid, jnp.take_along_axis(src, backward, axis=1), PAD_ID)
    return _batch(src, lengths.astype(jnp.int32), tgt, lengths.astype(jnp.int32))


def civil_from_days(days):
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
    (H. Hinnant's ``civil_from_days``), integer ops only."""
    z = days + 719468
    era = jnp.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = jnp.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year.astype(jnp.int32), month.astype(jnp.int32), day.astype(jnp.int32)


def days_from_civil(year: int, month: int, day: int) -> int:
    """The inverse of ``civil_from_days`` for Python ints."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


DATE_SRC_WIDTH = 18  # "September 30, 2049"


def dates(
    key, batch_size: int, *, first_year: int = 1950, last_year: int = 2049, formats=DATE_FORMATS
):
    """A date in one of ``formats`` (chosen uniformly per row; see
    ``DATE_FORMATS``) -> "YYYY-MM-DD". Years must have 4 digits."""
    if not 1000 <= first_year <= last_year <= 9999:
        raise ValueError(
            f"first_year, last_year: expected 1000 <= first <= last <= 9999, "
            f"got {first_year}, {last_year}"
        )
    unknown = sorted(set(formats) - set(DATE_FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats: expected some of {list(DATE_FORMATS)}, got {formats!r}")
    lo, hi = days_from_civil(first_year, 1, 1), days_from_civil(last_year, 12, 31)
    k_day, k_fmt = jax.random.split(key)
    year, month, day = civil_from_days(jax.random.randint(k_day, (batch_size,), lo, hi + 1))
    n = batch_size
    sp = _literal(" ", n)
    slash = _literal("/", n)
    names = {
        "Month": _table(MONTHS, month - 1),
        "Mon": _table([m[:3] for m in MONTHS], month - 1),
        "month": _table([m.lower() for m in MONTHS], month - 1),
    }
    d, dd = _number(day, 2), _number(day, 2, pad=True)
    mm, yyyy = _number(month, 2, pad=True), _number(year, 4, pad=True)
    layouts = {
        "D Month YYYY": [d, sp, names["Month"], sp, yyyy],
        "Month D, YYYY": [names["Month"], sp, d, _literal(", ", n), yyyy],
        "D Mon YYYY": [d, sp, names["Mon"], sp, yyyy],
        "DD/MM/YYYY": [dd, slash, mm, slash, yyyy],
        "D month YYYY": [d, sp, names["month"], sp, yyyy],
    }
    rendered = [_concat(layouts[f], DATE_SRC_WIDTH) for f in formats]
    choice = jax.random.randint(k_fmt, (n,), 0, len(formats))
    src = jnp.stack([r[0] for r in rendered])[choice, jnp.arange(n)]
    src_lengths = jnp.stack([r[1] for r in rendered])[choice, jnp.arange(n)]
    dash = _literal("-", n)
    tgt, tgt_lengths = _concat([yyyy, dash, mm, dash, dd], 10)
    return _batch(src, src_lengths, tgt, tgt_lengths)


TASKS = {"addition": addition, "reversal": reversal, "dates": dates}
