"""The character seq2seq tasks: correctness, round trips, determinism."""

from __future__ import annotations

import datetime
import functools

import jax
import numpy as np
import pytest

from recurrent_jax.data import seq2seq_tasks as st

N = 512
STRPTIME = {
    "D Month YYYY": "%d %B %Y",
    "Month D, YYYY": "%B %d, %Y",
    "D Mon YYYY": "%d %b %Y",
    "DD/MM/YYYY": "%d/%m/%Y",
    "D month YYYY": "%d %B %Y",
}


JITTED = {
    name: jax.jit(fn, static_argnums=1, static_argnames=("split",) if name == "addition" else ())
    for name, fn in st.TASKS.items()
}


@functools.cache
def batch(task, seed, **options):
    out = JITTED[task](jax.random.PRNGKey(seed), N, **options)
    return jax.tree_util.tree_map(np.asarray, out)


def texts(b):
    return st.decode(b.src, b.src_lengths), st.decode(b.tgt_out, b.tgt_lengths)


def check_layout(b):
    """BOS + target in, target + EOS out, PAD after; lengths count the EOS."""
    for i in range(3):
        n = b.tgt_lengths[i]
        assert b.tgt_in[i, 0] == st.BOS_ID and b.tgt_out[i, n - 1] == st.EOS_ID
        np.testing.assert_array_equal(b.tgt_in[i, 1:n], b.tgt_out[i, : n - 1])
        assert np.all(b.tgt_in[i, n:] == st.PAD_ID) and np.all(b.tgt_out[i, n:] == st.PAD_ID)
        assert np.all(b.src[i, b.src_lengths[i] :] == st.PAD_ID)


def test_vocabulary_round_trip():
    words = ["123+45", "", "3 March 1998", "1998-03-03", "zZ9 ,./-"]
    ids, lengths = st.encode(words, 16)
    assert ids.shape == (5, 16) and ids.dtype == np.int32
    assert st.decode(ids, lengths) == words
    assert st.decode(ids) == words
    assert min(ids[ids != st.PAD_ID]) > st.EOS_ID and ids.max() < st.VOCAB_SIZE
    with_markers = np.array([[st.BOS_ID, *st.char_ids("ab"), st.EOS_ID, *st.char_ids("c")]])
    assert st.decode(with_markers) == ["ab"]
    with pytest.raises(ValueError, match="text: characters"):
        st.encode(["a#b"])


def test_addition_sums_and_held_out_split():
    for split in ("train", "eval", "all"):
        b = batch("addition", 0, split=split)
        check_layout(b)
        sources, targets = texts(b)
        pairs = [tuple(map(int, s.split("+"))) for s in sources]
        assert [str(a + c) for a, c in pairs] == targets
        assert all(0 <= a <= 999 and 0 <= c <= 999 for a, c in pairs)
        assert all(s == f"{a}+{c}" for s, (a, c) in zip(sources, pairs, strict=True))
        held = [bool(st.is_held_out(a, c)) for a, c in pairs]
        if split == "train":
            assert not any(held)
        elif split == "eval":
            assert all(held)
            assert all(max(a, c) >= 10 for a, c in pairs)  # single digits all train
    digits = {len(s.split("+")[0]) for s in texts(batch("addition", 0, split="all"))[0]}
    assert digits == {1, 2, 3}
    assert not any(bool(st.is_held_out(a, c)) for a in range(10) for c in range(10))


def test_reversal():
    b = batch("reversal", 0)
    check_layout(b)
    sources, targets = texts(b)
    assert all(t == s[::-1] for s, t in zip(sources, targets, strict=True))
    assert {len(s) for s in sources} == set(range(1, 11))


def test_dates_in_every_format():
    b = batch("dates", 0)
    check_layout(b)
    sources, targets = texts(b)
    seen = set()
    for s, t in zip(sources, targets, strict=True):
        want = datetime.date.fromisoformat(t)
        assert 1950 <= want.year <= 2049
        parsed = []
        for name, fmt in STRPTIME.items():
            try:
                parsed.append((name, datetime.datetime.strptime(s, fmt).date()))
            except ValueError:
                continue
        assert parsed and all(d == want for _, d in parsed), (s, t)
        seen.update(name for name, _ in parsed)
    assert seen == set(st.DATE_FORMATS)
    days = np.array([st.days_from_civil(y, m, d) for y, m, d in [(1970, 1, 1), (2000, 2, 29)]])
    assert days.tolist() == [0, 11016]
    year, month, day = st.civil_from_days(days)
    assert (year.tolist(), month.tolist(), day.tolist()) == ([1970, 2000], [1, 2], [1, 29])


def test_determinism_by_seed():
    for task in st.TASKS:
        again = JITTED[task](jax.random.PRNGKey(0), N)
        for got, want in zip(again, batch(task, 0), strict=True):
            np.testing.assert_array_equal(np.asarray(got), want)
        assert not np.array_equal(batch(task, 1).src, batch(task, 0).src)


def test_option_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="split"):
        st.addition(key, 2, split="test")
    with pytest.raises(ValueError, match="min_length"):
        st.reversal(key, 2, min_length=0)
    with pytest.raises(ValueError, match="formats"):
        st.dates(key, 2, formats=("YYYYMMDD",))
