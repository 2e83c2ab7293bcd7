"""The Mamba block (``rj.mamba_block``) and its short convolution under the
engine's contract.

Oracles: the block against the float64 oracle of Mamba's block
(``ssm_oracles.mamba_block_ref``, written from the paper and
``mamba_simple.Mamba`` apart from this package) at Mamba's fp32 test
tolerances (rtol 6e-4, atol 2e-3); the convolution against a Python loop
over its window recurrence (the definition in ``recurrent_jax.short_conv``);
the block's padding,
reverse, masks with holes and packed rows against the same block run on
each sequence alone (unpadded, reversed by hand, holes removed), its carry
against running the sequence in two halves; the backends against the
sequential scan; the parameter count against the paper's formula.

Tolerances: fp32 results that take different paths (lengths, packing, two
halves) to the same sums agree to rounding, 1e-5 (values are O(1)).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, normal
from ssm_oracles import mamba_block_params, mamba_block_ref

import recurrent_jax as rj
from recurrent_jax import short_conv

M, E, N, K = 4, 8, 3, 4  # d_model, channels (expand 2), states, conv width
B, T, D = 3, 10, 5
LENGTHS = np.array([10, 6, 0])
TOL = dict(atol=1e-5, rtol=1e-5)


def block(**options):
    return rj.mamba_block(M, state_size=N, **options)


@pytest.fixture(scope="module")
def params():
    """Random params away from the init (the init's zero biases, unit D)."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda k: block(bias=True).init(k, D), jax.random.PRNGKey(0))
    draw = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype)  # noqa: E731
    return jax.tree_util.tree_map(draw, shapes)


def random_carry(rng, batch=(B,)):
    return rj.MambaCarry(normal(rng, (*batch, K - 1, E)), normal(rng, (*batch, E * N), 0.5))


def index(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


# --- against the oracle -------------------------------------------------------------

# our names -> mamba_block_ref's (the block's own, then its S6's)
ORACLE_NAMES = {"w_in": "in_proj_W", "b_in": "in_proj_b", "k_conv": "conv_W", "b_conv": "conv_b"}
ORACLE_NAMES |= {"w_out": "out_proj_W", "b_out": "out_proj_b"}
ORACLE_S6_NAMES = {"w_x": "x_proj_W", "w_dt": "dt_proj_W", "dt_bias": "dt_proj_b"}
ORACLE_S6_NAMES |= {"a_log": "A_log", "d": "D"}


def from_oracle(ref):
    """The block's params holding the oracle's (fp32)."""
    params = {ours: ref[theirs] for ours, theirs in ORACLE_NAMES.items() if theirs in ref}
    params["s6"] = {ours: ref[theirs] for ours, theirs in ORACLE_S6_NAMES.items()}
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)


@pytest.mark.parametrize("bias, impl", [(False, "scan"), (True, "chunked")])
def test_block_equals_the_reference_block(bias, impl):
    """Mamba's initialisation (``mamba_block_params``), a nonzero initial
    state (the conv window and the SSM state): outputs and final states."""
    rng = np.random.default_rng(5)
    ref = mamba_block_params(rng, M, d_state=N, d_conv=K)
    if bias:
        ref |= {"in_proj_b": rng.standard_normal(2 * E), "out_proj_b": rng.standard_normal(M)}
    xs = rng.standard_normal((B, T, M))
    state = (rng.standard_normal((B, K - 1, E)), 0.5 * rng.standard_normal((B, E, N)))
    want, (want_conv, want_ssm) = mamba_block_ref(xs, ref, state=state, return_state=True)
    layer = block(bias=bias, impl=impl, chunk_length=4)
    carry0 = rj.MambaCarry(
        jnp.asarray(state[0], jnp.float32), jnp.asarray(state[1].reshape(B, -1), jnp.float32)
    )
    carry, ys = jax.jit(layer.apply)(
        from_oracle(ref), jnp.asarray(xs, jnp.float32), initial_carry=carry0
    )
    np.testing.assert_allclose(ys, want, rtol=6e-4, atol=2e-3)
    np.testing.assert_allclose(carry.conv, want_conv, rtol=6e-4, atol=2e-3)
    np.testing.assert_allclose(carry.ssm, want_ssm.reshape(B, -1), rtol=6e-4, atol=2e-3)
    zero_state = mamba_block_ref(xs, ref)  # the default carry is the reference's zero state
    np.testing.assert_allclose(
        jax.jit(layer.apply)(from_oracle(ref), jnp.asarray(xs, jnp.float32))[1],
        zero_state,
        rtol=6e-4,
        atol=2e-3,
    )


# --- the convolution --------------------------------------------------------------


def loop_conv(xs, kernel, bias, window0, valid, resets):
    """The window recurrence one step at a time: a valid step restarts the
    window at a reset, reads it with x_t, then shifts x_t in."""
    steps, batch = xs.shape[:2]
    out, final = np.zeros(xs.shape), np.zeros(window0.shape)
    for b in range(batch):
        window = window0[b]
        for t in range(steps):
            if not valid[t, b]:
                continue
            window = window0[b] if resets[t, b] else window
            full = np.concatenate([window, xs[t, b][None]])
            out[t, b] = (full * kernel).sum(0) + bias
            window = full[1:]
        final[b] = window
    return out, final


@pytest.mark.parametrize("holes, restarts", [(False, False), (True, False), (True, True)])
def test_causal_conv_equals_the_window_loop(holes, restarts, rng):
    xs, kernel, bias = normal(rng, (T, B, E)), normal(rng, (K, E)), normal(rng, (E,))
    window0 = normal(rng, (B, K - 1, E))
    valid = rng.random((T, B)) < (0.6 if holes else 2.0)
    valid[:, 2] = False  # a row with no valid step keeps window0
    resets = rng.random((T, B)) < (0.3 if restarts else 0.0)
    us, history = jax.jit(
        lambda *a: short_conv.causal_conv(*a, valid=jnp.asarray(valid), resets=jnp.asarray(resets))
    )(xs, kernel, bias, window0)
    final = short_conv.window_after(history, jnp.asarray(valid.sum(0)) - 1)
    want, want_final = loop_conv(*map(np.asarray, (xs, kernel, bias, window0)), valid, resets)
    np.testing.assert_allclose(np.asarray(us)[valid], want[valid], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(final), want_final)


# --- the block's contract ----------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_padded_batch_equals_each_sequence_alone(reverse, params, rng):
    """seq_lengths: each row as the block run on its valid part alone (read
    backwards with ``reverse``), outputs zero after it; final carries (conv
    window and state) after its last valid step; length 0 keeps the initial
    carry."""
    layer = block(bias=True, reverse=reverse)
    xs, carry0 = normal(rng, (B, T, D)), random_carry(rng)
    run = jax.jit(layer.apply)
    carry, ys = run(params, xs, seq_lengths=jnp.asarray(LENGTHS), initial_carry=carry0)
    for b, length in enumerate(LENGTHS[:2]):
        alone = run(params, xs[b : b + 1, :length], initial_carry=index(carry0, slice(b, b + 1)))
        assert_trees_close(index(carry, b), index(alone[0], 0), **TOL)
        assert_trees_close(ys[b, :length], alone[1][0], **TOL)
    np.testing.assert_array_equal(np.asarray(ys)[1, 6:], 0.0)
    np.testing.assert_array_equal(np.asarray(ys)[2], 0.0)
    assert_trees_close(index(carry, 2), index(carry0, 2), atol=0.0)
    if reverse:  # reversing the valid part by hand and running forward is the same
        flipped = xs[1:2, :6][:, ::-1]
        forward = jax.jit(block(bias=True).apply)(
            params, flipped, initial_carry=index(carry0, slice(1, 2))
        )
        assert_trees_close(ys[1, :6], forward[1][0, ::-1], **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_mask_with_holes_skips_the_masked_steps(reverse, params, rng):
    """A masked step is skipped by the convolution's window too: the same
    as the sequence with the holes removed."""
    layer = block(reverse=reverse)
    xs = normal(rng, (1, T, D))
    mask = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 0, 1]], bool)
    carry, ys = jax.jit(layer.apply)(params, xs, mask=jnp.asarray(mask))
    kept, kept_ys = jax.jit(layer.apply)(params, xs[:, mask[0]])
    assert_trees_close(carry, kept, **TOL)
    assert_trees_close(ys[:, mask[0]], kept_ys, **TOL)
    np.testing.assert_array_equal(np.asarray(ys)[:, ~mask[0]], 0.0)


@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_packed_rows_equal_the_padded_batch(reverse, params, rng):
    """Every sequence of a packed row restarts the window and the state; the
    per-sequence carries and outputs are the padded batch's."""
    layer = block(bias=True, reverse=reverse)
    lengths = np.array([7, 2, 0, 3, 5])
    xs = normal(rng, (5, 7, D))
    packed = rj.pack(np.asarray(xs), lengths, row_length=9)
    assert packed.data.shape[0] < 5  # sequences do share rows
    one = random_carry(rng, ())
    many = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (5, *c.shape)), one)
    run = jax.jit(layer.apply, static_argnames="return_sequences")
    carry, ys = run(params, packed, initial_carry=one)
    want_carry, want_ys = run(params, xs, seq_lengths=jnp.asarray(lengths), initial_carry=many)
    assert_trees_close(carry, want_carry, **TOL)
    assert_trees_close(rj.unpack(ys, 7), want_ys, **TOL)
    _, last = run(params, packed, initial_carry=one, return_sequences=False)
    _, want_last = run(
        params, xs, seq_lengths=jnp.asarray(lengths), initial_carry=many, return_sequences=False
    )
    assert_trees_close(last, want_last, **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_carry_continues_a_sequence(reverse, params, rng):
    """A sequence run in two parts, the second from the first's final carry
    (Mamba's inference cache), equals the sequence run whole."""
    layer = block(reverse=reverse)
    xs, split = normal(rng, (B, T, D)), 3
    run = jax.jit(layer.apply)
    whole_carry, whole = run(params, xs)
    first, second = (xs[:, split:], xs[:, :split]) if reverse else (xs[:, :split], xs[:, split:])
    carry, ys_first = run(params, first)
    carry, ys_second = run(params, second, initial_carry=carry)
    parts = [ys_second, ys_first] if reverse else [ys_first, ys_second]
    assert_trees_close(carry, whole_carry, **TOL)
    assert_trees_close(jnp.concatenate(parts, axis=1), whole, **TOL)


def test_time_major_and_last_output(params, rng):
    xs, lengths = normal(rng, (B, T, D)), jnp.asarray(LENGTHS)
    carry, ys = jax.jit(block().apply)(params, xs, seq_lengths=lengths)
    tm = jax.jit(block(time_major=True).apply)(params, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths)
    assert_trees_close(tm, (carry, jnp.swapaxes(ys, 0, 1)), atol=0.0)
    for reverse in (False, True):
        run = jax.jit(block(reverse=reverse).apply, static_argnames="return_sequences")
        _, all_ys = run(params, xs, seq_lengths=lengths)
        _, last = run(params, xs, seq_lengths=lengths, return_sequences=False)
        want = all_ys[:, 0] if reverse else all_ys[jnp.arange(B), jnp.maximum(lengths - 1, 0)]
        assert_trees_close(last, jnp.where((lengths > 0)[:, None], want, 0.0), atol=0.0)


@pytest.mark.parametrize("impl", [pytest.param("associative", marks=pytest.mark.slow), "chunked"])
def test_backends_agree_with_gradients(impl, params, rng):
    xs, lengths, probe = normal(rng, (B, T, D)), jnp.asarray(LENGTHS), normal(rng, (B, T, M))

    def loss(layer):
        def value(params, xs):
            carry, ys = layer.apply(params, xs, seq_lengths=lengths)
            return jnp.sum(ys * probe) + jnp.sum(jnp.sin(carry.ssm)), ys

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1), has_aux=True))

    (_, want), want_grads = loss(block(reverse=True, impl="scan"))(params, xs)
    (_, got), got_grads = loss(block(reverse=True, impl=impl, chunk_length=3))(params, xs)
    assert_trees_close(got, want, **TOL)
    assert_trees_close(got_grads, want_grads, atol=1e-4, rtol=1e-4)


def test_vmapped_params_equal_a_loop(params, rng):
    """A sweep over params: ``jax.vmap`` of the block equals one run each."""
    stacked = jax.tree_util.tree_map(lambda p: jnp.stack([p, 0.5 * p, -p]), params)
    xs, lengths = normal(rng, (B, T, D)), jnp.asarray(LENGTHS)
    run = jax.jit(lambda p: block(bias=True).apply(p, xs, seq_lengths=lengths))
    carries, ys = jax.jit(jax.vmap(run))(stacked)
    for i in range(3):
        assert_trees_close(index((carries, ys), i), run(index(stacked, i)), **TOL)


def n_params(layer, input_size):
    shapes = jax.eval_shape(lambda k: layer.init(k, input_size), jax.random.PRNGKey(0))
    return sum(a.size for a in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("d_model, expand, state, width", [(64, 2, 16, 4), (48, 3, 8, 2)])
def test_param_count_is_the_papers(d_model, expand, state, width):
    """3·expand·d_model² in the projections (§3.4) when D = d_model, plus
    E·(2R + 3N + K + 3): x_proj E(R + 2N), dt_proj RE + E, A_log EN, D E,
    the convolution KE + E; the biases 2E + d_model."""
    rank, channels = math.ceil(d_model / 16), expand * d_model
    options = dict(expand=expand, state_size=state, d_conv=width)
    small = channels * (2 * rank + 3 * state + width + 3)
    projections = 3 * expand * d_model**2
    assert n_params(rj.mamba_block(d_model, **options), d_model) == projections + small
    biased = rj.mamba_block(d_model, bias=True, **options)
    assert n_params(biased, d_model) == projections + small + 2 * channels + d_model


def test_stacks_with_residuals(params, rng):
    """Blocks in ``rj.stack``: the composition, the residual added from the
    second block up (d_model in, d_model out)."""
    first, second = block(bias=True), block()
    net = rj.stack([first, second], residual=True)
    p2 = jax.tree_util.tree_map(lambda p: p[:M] if p.shape[0] == D else p, params)
    p2 = {k: v for k, v in p2.items() if k not in ("b_in", "b_out")}
    xs = normal(rng, (B, T, D))
    carries, ys = jax.jit(net.apply)({"layer_0": params, "layer_1": p2}, xs)
    c0, h = first.apply(params, xs)
    c1, out = second.apply(p2, h)
    assert_trees_close((carries, ys), ((c0, c1), out + h), **TOL)


def test_cell_stack_takes_a_block(rng):
    """``cell_stack`` of a block: the stack of (bidirectional) blocks built by
    hand, one block per layer and direction; per-layer regularisers and a
    learned carry are refused."""
    make = functools.partial(rj.mamba_block, M, state_size=N)
    net = rj.layers.cell_stack(make, 2, bidirectional=True, merge_mode="sum", residual=True)
    pair = rj.bidirectional(make(), make(reverse=True), merge_mode="sum")
    by_hand = rj.stack([pair, pair], residual=True)
    params = jax.jit(net.init, static_argnums=1)(jax.random.PRNGKey(0), D)
    xs, lengths = normal(rng, (B, T, D)), jnp.asarray(LENGTHS)
    got = jax.jit(net.apply)(params, xs, seq_lengths=lengths)
    assert_trees_close(got, jax.jit(by_hand.apply)(params, xs, seq_lengths=lengths), atol=0.0)
    with pytest.raises(ValueError, match="zoneout: expected 0 for a block"):
        rj.layers.cell_stack(make, zoneout=0.1)
    with pytest.raises(ValueError, match="learn_initial_carry: expected False for a block"):
        rj.layers.cell_stack(make, learn_initial_carry=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: rj.mamba_block(0), "d_model: expected a positive int, got 0"),
        (lambda: rj.mamba_block(4, expand=1.5), "expand: expected a positive int, got 1.5"),
        (lambda: rj.mamba_block(4, d_conv=0), "d_conv: expected a positive int, got 0"),
        (lambda: rj.mamba_block(4, reverse="yes"), "reverse: expected a bool, got 'yes'"),
        (lambda: rj.mamba_block(4, impl="fast"), "impl: expected one of"),
        (lambda: rj.mamba_block(4, state_size=0), "state_size: expected a positive int, got 0"),
    ],
)
def test_bad_options_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_bad_inputs_name_the_argument(params, rng):
    layer = block(bias=True)
    xs = normal(rng, (B, T, D))
    with pytest.raises(ValueError, match="xs: expected 5 features"):
        layer.apply(params, xs[..., :4])
    with pytest.raises(ValueError, match="initial_carry: expected"):
        layer.apply(params, xs, initial_carry=jnp.zeros((B, E * N)))
    packed = rj.pack(np.asarray(xs), LENGTHS)
    with pytest.raises(ValueError, match="seq_lengths: expected None with a Packed input"):
        layer.apply(params, packed, seq_lengths=jnp.asarray(LENGTHS))
    with pytest.raises(ValueError, match="time_major: expected False with a Packed input"):
        block(bias=True, time_major=True).apply(params, packed)
