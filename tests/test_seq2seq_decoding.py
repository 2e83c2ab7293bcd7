"""Greedy, sampled and beam-search decoding against NumPy oracles.

The model is a tiny random RNN whose logits depend on the hidden state, the
previous token and the step, with attention weights over S source positions
as its aux; it never emits PAD (logit -inf), so PAD marks only the padding.
The oracles run the same model in float64 NumPy, one row and one token at a
time, and enumerate every hypothesis for the exhaustive search.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrent_jax.seq2seq.beam import beam_search, gather_beams, tile_beams
from recurrent_jax.seq2seq.decoding import greedy_decode, sample_decode

V, H, S = 5, 3, 4  # vocabulary, hidden units, source positions
PAD, EOS, BOS = 0, 1, 2
IDS = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)
POSITIONS = 8  # rows of the per-step logit table


class ToyState(NamedTuple):
    h: jax.Array  # (B, H)
    t: jax.Array  # (B,) int32, the step


def make_params(rng, scale=1.5):
    shapes = dict(w=(H, H), emb=(V, H), out=(H, V), prev=(V, V), pos=(POSITIONS, V), att=(H, S))
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def make_step(params, with_aux=True):
    p = {k: jnp.asarray(v) for k, v in params.items()}

    def step(state, tokens):
        h = jnp.tanh(state.h @ p["w"] + p["emb"][tokens])
        logits = h @ p["out"] + p["prev"][tokens] + p["pos"][jnp.minimum(state.t, POSITIONS - 1)]
        logits = logits.at[:, PAD].set(-jnp.inf)
        new_state = ToyState(h, state.t + 1)
        if not with_aux:
            return logits, new_state
        return logits, new_state, jax.nn.softmax(h @ p["att"], axis=-1)

    return step


def initial_state(rng, batch):
    h = rng.standard_normal((batch, H)).astype(np.float32)
    return ToyState(jnp.asarray(h), jnp.zeros((batch,), jnp.int32))


# --- the NumPy oracle ----------------------------------------------------------


def np_step(params, h, t, token):
    """One row in float64: (log-probs (V,), new h, attention (S,))."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    h = np.tanh(h @ p["w"] + p["emb"][token])
    logits = h @ p["out"] + p["prev"][token] + p["pos"][min(t, POSITIONS - 1)]
    logits[PAD] = -np.inf
    log_probs = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
    scores = h @ p["att"]
    att = np.exp(scores - scores.max())
    return log_probs, h, att / att.sum()


def hypotheses(params, h0, max_len):
    """Every complete hypothesis of one row: (tokens, log P, attention (|Y|, S))."""
    found = []

    def grow(tokens, h, log_p, atts):
        log_probs, h, att = np_step(params, h, len(tokens), tokens[-1] if tokens else BOS)
        for v in range(V):
            if v == PAD:
                continue
            seq, total, seen = tokens + [v], log_p + log_probs[v], atts + [att]
            if v == EOS or len(seq) == max_len:
                found.append((tuple(seq), total, np.array(seen)))
            else:
                grow(seq, h, total, seen)

    grow([], np.asarray(h0, np.float64), 0.0, [])
    return found


def gnmt(log_p, att, alpha, beta, mask):
    """log P / ((5 + |Y|) / 6)^α + β Σ_{i in mask} log min(Σ_j p_ij, 1)."""
    length = len(att)
    coverage = np.log(np.minimum(att.sum(axis=0), 1.0))[mask].sum()
    return log_p / ((5.0 + length) / 6.0) ** alpha + beta * coverage


def np_greedy(params, h0, max_len):
    tokens, log_p, atts, h, token = [], 0.0, [], np.asarray(h0, np.float64), BOS
    while len(tokens) < max_len and token != EOS:
        log_probs, h, att = np_step(params, h, len(tokens), token)
        token = int(np.argmax(log_probs))
        tokens, log_p, atts = tokens + [token], log_p + log_probs[token], atts + [att]
    return tokens, log_p, np.array(atts)


def padded(tokens, max_len):
    return np.array(list(tokens) + [PAD] * (max_len - len(tokens)))


def padded_aux(att, max_len):
    return np.concatenate([att, np.zeros((max_len - len(att), S))])


# One model for the whole file, so the jitted decoders below compile once per
# static configuration and input shape.
PARAMS = make_params(np.random.default_rng(0))
STEP = make_step(PARAMS)
greedy = jax.jit(functools.partial(greedy_decode, STEP, **IDS), static_argnames="max_len")
sample = jax.jit(
    functools.partial(sample_decode, STEP, **IDS), static_argnames=("max_len", "top_k")
)
beam = jax.jit(
    functools.partial(beam_search, STEP, **IDS),
    static_argnames=("beam_size", "max_len", "num_return", "early_stopping"),
)
BATCH, MAX_LEN = 5, 6


# --- greedy and EOS handling ----------------------------------------------------


def test_greedy_matches_numpy_and_pads_after_eos(rng):
    state = initial_state(rng, BATCH)
    out = greedy(state, max_len=MAX_LEN)
    assert out.sequences.dtype == jnp.int32 and out.lengths.dtype == jnp.int32
    assert out.sequences.shape == (BATCH, MAX_LEN) and out.aux.shape == (BATCH, MAX_LEN, S)
    lengths = np.asarray(out.lengths)
    assert (lengths < MAX_LEN).any(), "the case needs a row that ends before max_len"
    for b in range(BATCH):
        tokens, log_p, att = np_greedy(PARAMS, state.h[b], MAX_LEN)
        np.testing.assert_array_equal(out.sequences[b], padded(tokens, MAX_LEN))
        assert lengths[b] == len(tokens)
        np.testing.assert_allclose(out.scores[b], log_p, atol=1e-5)
        np.testing.assert_allclose(out.aux[b], padded_aux(att, MAX_LEN), atol=1e-6)


def test_finished_rows_stop_changing(rng):
    """Decoding longer changes nothing in the rows that ended."""
    state = initial_state(rng, BATCH)
    short = greedy(state, max_len=MAX_LEN)
    long = greedy(state, max_len=MAX_LEN + 3)
    ended = (np.asarray(short.sequences) == EOS).any(axis=1)
    assert ended.any() and not ended.all(), "the case needs rows that end and rows cut short"
    np.testing.assert_array_equal(long.sequences[ended, :MAX_LEN], short.sequences[ended])
    assert (np.asarray(long.sequences[ended, MAX_LEN:]) == PAD).all()
    np.testing.assert_array_equal(long.lengths[ended], short.lengths[ended])
    np.testing.assert_array_equal(long.scores[ended], short.scores[ended])
    assert (np.asarray(long.lengths[~ended]) > MAX_LEN).all()


def always_eos(state, tokens):
    logits = jnp.where(jnp.arange(V) == EOS, 0.0, -jnp.inf)
    return jnp.broadcast_to(logits, (tokens.shape[0], V)), state


@pytest.mark.parametrize("decoder", ["greedy", "sample", "beam"])
def test_a_model_that_always_emits_eos_gives_length_one(decoder):
    ids = dict(bos_id=BOS, eos_id=EOS, pad_id=3, max_len=4)
    decode = {
        "greedy": functools.partial(greedy_decode, always_eos, **ids),
        "sample": lambda s: sample_decode(always_eos, s, jax.random.key(0), **ids),
        "beam": functools.partial(beam_search, always_eos, beam_size=3, length_penalty=0.6, **ids),
    }[decoder]
    out = jax.jit(decode)(jnp.zeros((3, 2)))
    np.testing.assert_array_equal(out.sequences, np.tile([EOS, 3, 3, 3], (3, 1)))
    np.testing.assert_array_equal(out.lengths, np.ones(3))
    np.testing.assert_array_equal(out.scores, np.zeros(3))
    assert out.aux is None


# --- sampling ------------------------------------------------------------------


def test_top_k_one_sampling_is_greedy(rng):
    state = initial_state(rng, BATCH)
    want = greedy(state, max_len=MAX_LEN)
    got = sample(state, jax.random.key(3), max_len=MAX_LEN, temperature=0.7, top_k=1)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.6, 2)])
def test_sampling_frequencies_match_the_first_step_softmax(rng, fast_key, temperature, top_k):
    """Each first-token frequency over N draws lies within 4.5 standard errors
    sqrt(p (1 - p) / N) of softmax(log-probs / T) restricted to the top k."""
    n, state = 4000, initial_state(rng, 2)
    draw = jax.vmap(lambda key: sample(state, key, max_len=2, temperature=temperature, top_k=top_k))
    out = jax.jit(draw)(jax.random.split(fast_key, n))
    for b in range(2):
        log_probs, _, _ = np_step(PARAMS, np.asarray(state.h[b], np.float64), 0, BOS)
        logits = log_probs / temperature
        if top_k is not None:
            logits = np.where(logits >= np.sort(logits)[-top_k], logits, -np.inf)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        freq = np.bincount(np.asarray(out.sequences[:, b, 0]), minlength=V) / n
        assert np.all(np.abs(freq - p) <= 4.5 * np.sqrt(p * (1 - p) / n)), (freq, p)
    # Scores are log P under the model's own softmax, not the tempered one.
    tokens, length = np.asarray(out.sequences[0, 0]), int(out.lengths[0, 0])
    h, log_p = np.asarray(state.h[0], np.float64), 0.0
    for t in range(length):
        log_probs, h, _ = np_step(PARAMS, h, t, tokens[t - 1] if t else BOS)
        log_p += log_probs[tokens[t]]
    np.testing.assert_allclose(out.scores[0, 0], log_p, atol=1e-5)


# --- beam search ---------------------------------------------------------------


def test_beam_holding_every_hypothesis_is_exhaustive_search(rng):
    """Beam V^L returns every hypothesis, ranked by the GNMT score as
    computed by NumPy (α = β = 0, α > 0, α and β > 0 with a source mask)."""
    batch, max_len = 3, 3
    size = V**max_len
    state = initial_state(rng, batch)
    mask = np.ones((batch, S), bool)
    mask[1, 0] = mask[2, 1:3] = False
    for alpha, beta in [(0.0, 0.0), (1.2, 0.0), (0.6, 0.8)]:
        out = beam(
            state,
            beam_size=size,
            max_len=max_len,
            length_penalty=alpha,
            coverage_penalty=beta,
            source_mask=mask,
            num_return=size,
        )
        for b in range(batch):
            oracle = {
                seq: (log_p, att, gnmt(log_p, att, alpha, beta, mask[b]))
                for seq, log_p, att in hypotheses(PARAMS, state.h[b], max_len)
            }
            lengths = np.asarray(out.lengths[b])
            found = lengths > 0
            assert found.sum() == len(oracle) == 1 + 3 + 9 * 4
            scores = np.asarray(out.scores[b])
            assert np.all(np.diff(scores[found]) <= 0) and np.all(scores[~found] == -np.inf)
            for r in np.flatnonzero(found):
                seq = tuple(np.asarray(out.sequences[b, r, : lengths[r]]))
                log_p, att, score = oracle.pop(seq)
                assert (np.asarray(out.sequences[b, r, lengths[r] :]) == PAD).all()
                np.testing.assert_allclose(out.log_probs[b, r], log_p, atol=1e-4)
                np.testing.assert_allclose(scores[r], score, atol=1e-4)
                np.testing.assert_allclose(out.aux[b, r], padded_aux(att, max_len), atol=1e-5)
            assert not oracle


def test_beam_size_one_is_greedy(rng):
    state = initial_state(rng, BATCH)
    want = greedy(state, max_len=MAX_LEN)
    for alpha in (0.0, 0.7):
        got = beam(state, beam_size=1, max_len=MAX_LEN, length_penalty=alpha)
        np.testing.assert_array_equal(got.sequences, want.sequences)
        np.testing.assert_array_equal(got.lengths, want.lengths)
        np.testing.assert_allclose(got.log_probs, want.scores, atol=1e-5)
        lp = ((5.0 + np.asarray(want.lengths)) / 6.0) ** alpha
        np.testing.assert_allclose(got.scores, np.asarray(want.scores) / lp, atol=1e-5)
        np.testing.assert_allclose(got.aux, want.aux, atol=1e-6)


A = 3  # the token of the longer hypothesis in the length-penalty case
TABLE = np.full((V, V), 1.0 / (V - 1))
TABLE[:, PAD] = 0.0
TABLE[BOS] = [0.0, 0.40, 0.22, 0.38, 0.0]  # EOS .40 now, or A .38 ...
TABLE[A] = [0.0, 0.95, 0.02, 0.03, 0.0]  # ... then EOS .95: P(A EOS) = .361


def table_step(state, tokens):
    return jnp.log(jnp.asarray(TABLE, jnp.float32))[tokens], state


table_beam = jax.jit(
    functools.partial(beam_search, table_step, max_len=3, **IDS),
    static_argnames=("beam_size", "num_return", "early_stopping"),
)
SHORT, LONG = np.log(0.40), np.log(0.38) + np.log(0.95)  # log P of [EOS] and [A, EOS]


def test_length_penalty_can_prefer_the_longer_hypothesis():
    """s = log P / ((5 + |Y|) / 6)^α with |Y| counting the EOS: [EOS] has
    |Y| = 1 and lp = 1, [A, EOS] has |Y| = 2 and lp = (7/6)^α."""
    state = jnp.zeros((2, 1))
    for alpha, winner in [(0.0, [EOS]), (1.0, [A, EOS])]:
        out = table_beam(state, beam_size=4, num_return=2, length_penalty=alpha)
        want = sorted([(SHORT, [EOS]), (LONG / (7 / 6) ** alpha, [A, EOS])], reverse=True)
        assert want[0][1] == winner
        for b in range(2):
            for r, (score, tokens) in enumerate(want):
                np.testing.assert_array_equal(out.sequences[b, r], padded(tokens, 3))
                assert out.lengths[b, r] == len(tokens)
                np.testing.assert_allclose(out.scores[b, r], score, rtol=1e-6)


@pytest.mark.parametrize("early_stopping, winner", [(True, [EOS]), (False, [A, EOS])])
def test_early_stopping_ends_a_row_once_the_beam_has_finished(early_stopping, winner):
    """Beam 1, α = 1: [EOS] ranks first at step 0 and fills the beam; only
    the search that goes on finds [A, EOS], whose score is higher."""
    out = table_beam(
        jnp.zeros((2, 1)), beam_size=1, length_penalty=1.0, early_stopping=early_stopping
    )
    score = SHORT if early_stopping else LONG / (7 / 6)
    np.testing.assert_array_equal(out.sequences, np.tile(padded(winner, 3), (2, 1)))
    np.testing.assert_allclose(out.scores, [score, score], rtol=1e-6)


def test_tile_and_gather_beams():
    tree = {"a": jnp.arange(6).reshape(2, 3), "b": jnp.arange(2)}
    tiled = tile_beams(tree, 2)
    np.testing.assert_array_equal(tiled["b"], [0, 0, 1, 1])
    np.testing.assert_array_equal(tiled["a"][:2], [[0, 1, 2]] * 2)
    picked = gather_beams({"b": jnp.arange(6)}, jnp.array([[2, 0], [1, 1]]))
    np.testing.assert_array_equal(picked["b"], [2, 0, 4, 4])


# --- transformations -------------------------------------------------------------


def test_vmap_equals_a_loop(rng):
    """vmap over states and penalties equals one call per index."""
    n = 2
    states = [initial_state(rng, BATCH) for _ in range(n)]
    alphas, betas = [0.0, 0.8], [0.3, 0.0]
    options = dict(beam_size=3, max_len=MAX_LEN, num_return=2)
    stack = lambda xs: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *xs)

    def decode(state, alpha, beta):
        return (
            beam(state, length_penalty=alpha, coverage_penalty=beta, **options),
            greedy(state, max_len=MAX_LEN),
        )

    batched = jax.jit(jax.vmap(decode))(stack(states), jnp.asarray(alphas), jnp.asarray(betas))
    for i in range(n):
        solo = jax.tree_util.tree_leaves(decode(states[i], alphas[i], betas[i]))
        for got, want in zip(jax.tree_util.tree_leaves(batched), solo, strict=True):
            np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_jit_does_not_retrace_for_new_values_of_the_same_shapes(rng):
    traces = []

    def step(state, tokens):
        traces.append(None)
        return STEP(state, tokens)

    search = jax.jit(functools.partial(beam_search, step, beam_size=2, max_len=3, **IDS))
    search(initial_state(rng, 2))
    count = len(traces)
    search(initial_state(rng, 2))
    assert count > 0 and len(traces) == count


# --- errors ----------------------------------------------------------------------


def bad_state_step(state, tokens):
    return jnp.zeros((tokens.shape[0], V)), state[:, :1]


STATE = ToyState(jnp.zeros((2, H)), jnp.zeros((2,), jnp.int32))
KEY = jax.random.key(0)
NO_AUX = make_step(PARAMS, with_aux=False)
beam2 = functools.partial(beam_search, STEP, STATE, beam_size=2, max_len=3)
BAD = [
    ("beam_size", lambda: beam_search(STEP, STATE, beam_size=0, max_len=3, **IDS)),
    ("beam_size", lambda: beam_search(STEP, STATE, beam_size=2.0, max_len=3, **IDS)),
    ("max_len", lambda: greedy_decode(STEP, STATE, max_len=0, **IDS)),
    ("max_len", lambda: beam_search(STEP, STATE, beam_size=2, max_len=-1, **IDS)),
    ("eos_id", lambda: greedy_decode(STEP, STATE, max_len=3, bos_id=BOS, eos_id=V)),
    ("bos_id", lambda: beam2(bos_id=-1, eos_id=EOS)),
    ("pad_id", lambda: sample_decode(STEP, STATE, KEY, max_len=3, bos_id=2, eos_id=1, pad_id=V)),
    ("length_penalty", lambda: beam2(length_penalty=-0.5, **IDS)),
    ("coverage_penalty", lambda: beam2(coverage_penalty=-1.0, **IDS)),
    (
        "coverage_penalty",
        lambda: beam_search(NO_AUX, STATE, beam_size=2, max_len=3, coverage_penalty=0.5, **IDS),
    ),
    (
        "source_mask",
        lambda: beam2(coverage_penalty=0.5, source_mask=jnp.ones((2, S + 1), bool), **IDS),
    ),
    ("num_return", lambda: beam2(num_return=3, **IDS)),
    ("temperature", lambda: sample_decode(STEP, STATE, KEY, max_len=3, temperature=0.0, **IDS)),
    ("top_k", lambda: sample_decode(STEP, STATE, KEY, max_len=3, top_k=V + 1, **IDS)),
    ("top_k", lambda: sample_decode(STEP, STATE, KEY, max_len=3, top_k=0, **IDS)),
    ("step_fn", lambda: greedy_decode(bad_state_step, jnp.zeros((2, 3)), max_len=3, **IDS)),
    ("step_fn", lambda: greedy_decode(lambda s, t: (t, s), jnp.zeros((2, 3)), max_len=3, **IDS)),
    (
        "init_state",
        lambda: greedy_decode(
            STEP, ToyState(jnp.zeros((2, H)), jnp.zeros((3,), jnp.int32)), max_len=3, **IDS
        ),
    ),
]


@pytest.mark.parametrize("name, call", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_raise_errors_naming_them(name, call):
    with pytest.raises((ValueError, TypeError), match=f"^{name}: "):
        call()
