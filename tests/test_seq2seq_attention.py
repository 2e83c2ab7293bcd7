"""Attention mechanisms and the attention decoder against NumPy (float64)
implementations of their published equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close

import recurrent_jax as rj
from recurrent_jax import seq2seq as s2s

B, S, Q, M, U, E = 3, 5, 4, 6, 7, 3
LENGTHS = np.array([5, 2, 0])


def random_tree(shapes, rng, scale=0.5):
    """Random float32 leaves shaped like ``shapes``; scalars near 1."""

    def draw(s):
        if s.shape == ():
            return jnp.asarray(1.0 + 0.3 * rng.standard_normal(), jnp.float32)
        return jnp.asarray(scale * rng.standard_normal(s.shape), jnp.float32)

    return jax.tree_util.tree_map(draw, shapes)


def random_params(init, rng, *args):
    return random_tree(jax.eval_shape(lambda k: init(k, *args), jax.random.PRNGKey(0)), rng)


def f64(a):
    return np.asarray(a, np.float64)


# --- NumPy oracles ---------------------------------------------------------


def np_scores(kind, p, q, h, *, normalize=False, scale=False):
    """Scores (B, S) from the papers' equations; q (B, Q), h (B, S, M)."""
    p = {k: f64(v) for k, v in p.items()}
    if kind == "dot":
        s = np.einsum("bq,bsq->bs", q, h)
    elif kind == "general":
        s = np.einsum("bq,bsq->bs", q, h @ p["w_memory"])
    else:
        pre = (q @ p["w_query"])[:, None, :] + h @ p["w_memory"]
        v = p["v"]
        if normalize:
            pre = pre + p["b"]
            v = p["g"] * v / np.linalg.norm(v)
        s = np.tanh(pre) @ v
    return p["g"] * s if scale else s


def np_attend(scores, h, lengths):
    mask = np.arange(scores.shape[1])[None, :] < lengths[:, None]
    weights = np.zeros_like(scores)
    for b in range(scores.shape[0]):
        if lengths[b]:
            e = np.exp(scores[b, mask[b]] - scores[b, mask[b]].max())
            weights[b, mask[b]] = e / e.sum()
    return np.einsum("bs,bsm->bm", weights, h), weights


VARIANTS = [
    ("additive", {}),
    ("additive", {"normalize": True}),
    ("dot", {}),
    ("dot", {"scale": True}),
    ("general", {}),
    ("general", {"scale": True}),
    ("concat", {}),
    ("concat", {"scale": True}),
]


@pytest.mark.parametrize("kind, options", VARIANTS)
def test_attention_equals_numpy(kind, options, rng):
    memory_size = Q if kind == "dot" else M
    mech = s2s.make_attention(kind, U, **options)
    params = random_params(mech.init, rng, Q, memory_size)
    q = rng.standard_normal((B, Q)).astype(np.float32)
    h = rng.standard_normal((B, S, memory_size)).astype(np.float32)
    mask = rj.length_mask(jnp.asarray(LENGTHS), S)

    @jax.jit
    def run(params, q, h, mask):
        memory = s2s.attention.make_memory(mech, params, h, mask)
        return s2s.attend(mech, params, q, memory)

    context, weights = run(params, q, h, mask)
    want_scores = np_scores(kind, params, f64(q), f64(h), **options)
    want_context, want_weights = np_attend(want_scores, f64(h), LENGTHS)
    np.testing.assert_allclose(f64(weights), want_weights, atol=1e-6)
    np.testing.assert_allclose(f64(context), want_context, atol=1e-5)
    # exact zeros where masked, sums of one, length 0 gives zero context
    assert np.all(np.asarray(weights)[~np.asarray(mask)] == 0.0)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), [1.0, 1.0, 0.0], atol=1e-6)
    assert np.all(np.asarray(context)[2] == 0.0)


def test_masked_softmax_ignores_huge_masked_scores_and_has_finite_gradients():
    scores = jnp.array([[1.0, 2.0, 1e30, -1e30], [3e38, 0.0, 0.0, 0.0]])
    mask = jnp.array([[True, True, False, False], [False, False, False, False]])
    w = s2s.masked_softmax(scores, mask)
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(np.asarray(w[0]), [*(e / e.sum()), 0.0, 0.0], rtol=1e-6)
    assert np.all(np.asarray(w[1]) == 0.0)
    weighted = lambda s: jnp.sum(s2s.masked_softmax(s, mask) * jnp.arange(4.0)[None, :])
    grad = jax.grad(weighted)(scores)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)


def test_unknown_kind_and_misplaced_options_are_errors():
    with pytest.raises(ValueError, match="attention: expected one of"):
        s2s.make_attention("luong", U)
    with pytest.raises(ValueError, match="attention_size"):
        s2s.make_attention("additive")
    with pytest.raises(ValueError, match="normalize"):
        s2s.make_attention("general", normalize=True)
    with pytest.raises(ValueError, match="scale"):
        s2s.make_attention("additive", U, scale=True)
    with pytest.raises(ValueError, match="'dot' needs the decoder output size"):
        s2s.make_attention("dot").init(jax.random.PRNGKey(0), Q, M)


# --- the attention decoder ---------------------------------------------------


def make_decoder(rng, *, num_layers=2, kind="general", layer_size=5, feeding=True):
    cells = [rj.cells.elman(Q) for _ in range(num_layers)]
    mech = None if kind is None else s2s.make_attention(kind, U)
    dec = s2s.attention_decoder(cells, mech, attention_layer_size=layer_size, input_feeding=feeding)
    return dec, random_params(dec.init, rng, E, M)


def initial_state(dec, params, rng):
    values = jnp.asarray(rng.standard_normal((B, S, M)), jnp.float32)
    mask = rj.length_mask(jnp.asarray(LENGTHS), S)
    carries = tuple(jnp.asarray(0.5 * rng.standard_normal((B, Q)), jnp.float32) for _ in dec.cells)
    return dec.initial_state(params, values, mask, carries)


@pytest.mark.parametrize("kind", ["general", None])
def test_decoder_scan_equals_python_loop_of_its_step(kind, rng):
    dec, params = make_decoder(rng, kind=kind)
    state = initial_state(dec, params, rng)
    xs = jnp.asarray(rng.standard_normal((4, B, E)), jnp.float32)  # time-major
    _, (ys, weights) = jax.jit(
        lambda s, x: jax.lax.scan(lambda c, xt: dec.step(params, c, xt), s, x)
    )(state, xs)
    step = jax.jit(lambda s, x: dec.step(params, s, x))
    for t in range(xs.shape[0]):
        state, (y, w) = step(state, xs[t])
        assert_trees_close((ys[t], weights[t]), (y, w), atol=1e-6)
    assert ys.shape == (4, B, 5 if kind else Q)
    if kind is None:
        assert np.all(np.asarray(weights) == 0.0)


@pytest.mark.parametrize("feeding", [True, False])
def test_decoder_step_equals_numpy_input_feeding(feeding, rng):
    dec, params = make_decoder(rng, num_layers=1, kind="additive", feeding=feeding)
    state = initial_state(dec, params, rng)
    state = state._replace(attention=jnp.asarray(rng.standard_normal((B, 5)), jnp.float32))
    x = jnp.asarray(rng.standard_normal((B, E)), jnp.float32)
    new, (y, weights) = jax.jit(lambda s, x: dec.step(params, s, x))(state, x)

    cell = {k: f64(v) for k, v in params["cells"]["layer_0"].items()}
    inputs = np.concatenate([f64(x), f64(state.attention)], -1) if feeding else f64(x)
    h = np.tanh(
        inputs @ cell["w_ih"] + cell["b_ih"] + f64(state.carries[0]) @ cell["w_hh"] + cell["b_hh"]
    )
    scores = np_scores("additive", params["attention"], h, f64(state.memory.values))
    context, want_weights = np_attend(scores, f64(state.memory.values), LENGTHS)
    a = np.tanh(np.concatenate([h, context], -1) @ f64(params["attention_layer"]["w"]))
    np.testing.assert_allclose(f64(new.carries[0]), h, atol=1e-5)
    np.testing.assert_allclose(f64(weights), want_weights, atol=1e-5)
    np.testing.assert_allclose(f64(y), a, atol=1e-5)
    np.testing.assert_allclose(f64(new.attention), a, atol=1e-5)
    first = params["cells"]["layer_0"]["w_ih"].shape[0]
    assert first == (E + 5 if feeding else E)


def test_decoder_without_attention_layer_outputs_the_context(rng):
    dec, params = make_decoder(rng, num_layers=1, layer_size=None)
    state = initial_state(dec, params, rng)
    x = jnp.asarray(rng.standard_normal((B, E)), jnp.float32)
    _, (y, weights) = jax.jit(lambda s, x: dec.step(params, s, x))(state, x)
    want = np.einsum("bs,bsm->bm", f64(weights), f64(state.memory.values))
    np.testing.assert_allclose(f64(y), want, atol=1e-5)
    assert y.shape == (B, M) and dec.output_size(M) == M
