"""``rj.unroll`` against a plain Python loop over ``step`` that implements the
padding / reverse / reset semantics of DESIGN.md "Conventions" by hand."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    CELLS,
    FAMILIES,
    STATE_SPACE_CELLS,
    H,
    assert_trees_close,
    make,
    normal,
    random_carry,
    random_params,
)
from jax.test_util import check_grads
from test_cells import np_step

import recurrent_jax as rj

B, T, D = 3, 5, 3
LENGTHS = np.array([T, 0, 3])  # full, empty, partial
TOL = dict(atol=1e-5, rtol=1e-5)
EPS32 = 2.0**-24  # unit roundoff of float32

# The engine matrices run in full under `-m slow`; the default run keeps one
# fused-capable and one scan-only family, the oscillator cell (2×2 blocks)
# and the selective SSM.
FAST_FAMILIES = ("lstm", "mgu", "linoss", "s6-gate")


def families(fast=FAST_FAMILIES):
    return [
        name if name in fast else pytest.param(name, marks=pytest.mark.slow) for name in FAMILIES
    ]


# --- the reference loop ------------------------------------------------------------


def one_step(cell, params):
    """step(carry, x_t) for one time step of any batch shape: project inside."""

    def step(carry, x):
        return cell.step(params, carry, cell.project(params, x[..., None, :])[..., 0, :])

    return step


def user_cell(cell):
    """The same cell as a user would write it: only init, step, initial_carry;
    the input projection runs inside step, so unroll cannot hoist it."""

    def step(params, carry, x):
        return one_step(cell, params)(carry, x)

    return rj.Cell(init=cell.init, step=step, initial_carry=cell.initial_carry)


def tree_index(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def tree_stack(trees, shape):
    """Stacks per-element trees into leaves of shape ``shape + leaf.shape``."""
    return jax.tree_util.tree_map(
        lambda *ls: np.stack([np.asarray(a) for a in ls]).reshape(shape + np.shape(ls[0])), *trees
    )


def loop_unroll(
    step, carry0, xs, *, valid=None, resets=None, reverse=False, reset_carry=None, zoneout=None
):
    """Runs each sequence by itself, one step at a time.

    step(carry, x_t) -> (carry, y) for one sequence; carry0 leaves (B..., ·);
    xs (B..., T, D); valid, resets (B..., T) bool or None.
    Semantics: a padded step keeps the carry and outputs zeros; a reset restarts
    from ``reset_carry`` (default carry0) before reading x_t; reverse reads
    T-1, ..., 0; outputs and carries stay at their input positions;
    ``zoneout`` (a rate) applies the evaluation average p·old + (1−p)·new.

    Returns (final carry, ys, carries, ys in processing order).
    """
    xs = np.asarray(xs)
    batch_shape, num_steps = xs.shape[:-2], xs.shape[-2]
    reset_carry = carry0 if reset_carry is None else reset_carry
    finals, all_ys, all_carries, all_processed = [], [], [], []
    for idx in np.ndindex(*batch_shape):
        carry = tree_index(carry0, idx)
        ys, carries, processed = [None] * num_steps, [None] * num_steps, []
        for t in reversed(range(num_steps)) if reverse else range(num_steps):
            if valid is None or valid[idx + (t,)]:
                if resets is not None and resets[idx + (t,)]:
                    carry = tree_index(reset_carry, idx)
                new, y = step(carry, xs[idx + (t,)])
                if zoneout is not None:
                    new = jax.tree_util.tree_map(
                        lambda o, n: zoneout * o + (1.0 - zoneout) * n, carry, new
                    )
                carry = new
                y = np.asarray(y)
                processed.append(y)
            else:
                y = None
            ys[t], carries[t] = y, carry
        finals.append(carry)
        all_ys.append(ys)
        all_carries.append(carries)
        all_processed.append(processed)
    size = next(np.shape(p[0])[-1] for p in all_processed if p)
    zero = np.zeros(size, np.float32)
    ys = np.stack([[zero if y is None else y for y in seq] for seq in all_ys])
    processed = np.stack([p + [zero] * (num_steps - len(p)) for p in all_processed])
    carries = tree_stack([tree_stack(c, (num_steps,)) for c in all_carries], batch_shape)
    shape = batch_shape + (num_steps, size)
    return (
        tree_stack(finals, batch_shape),
        ys.reshape(shape),
        carries,
        processed.reshape(shape),
    )


def prefix_mask(lengths, num_steps=T):
    return np.arange(num_steps) < np.asarray(lengths)[..., None]


def rounding_tolerance(name, params, carry0, xs, *, lengths=None, reverse=False, draws=8):
    """Tolerance for comparing two float32 evaluations of a zoo cell's unroll.

    Two correct float32 evaluations (the engine's fused jit and the loop's
    eager steps) round differently, and each lands within its forward error
    of the exact result. That error is the problem's response to rounding
    its inputs, which this measures in float64 with the NumPy equations of
    test_cells.py: every param, input and initial-carry entry is perturbed by
    a relative ±EPS32 (one rounding each) and the largest move of any output
    or final-carry entry is kept. Two evaluations may differ by the sum of
    their forward errors, each a few such roundings deep, hence 4× that
    spread on top of the default atol.

    For most cells the spread is ~1e-7 and the default tolerance stands
    (for the state-space cells, linear in the carry over T = 5 steps, it is
    taken to be: their float64 equations are in test_ssm.py and
    test_s6.py). The
    LayerNorm LSTM is the exception: it normalises each gate's H = 4
    pre-activations by their spread σ, so rounding errors grow by 1/σ where
    σ is small (σ = 0.013 at one step of this test's reverse case, whose
    final c then moves by 1.0e-5 under one-ulp input perturbations).
    """
    if name in STATE_SPACE_CELLS:
        return TOL
    step = np_step(name)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xs64 = np.asarray(xs, np.float64)
    carry64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), carry0)

    def outputs(p, xs, carry):
        out = []
        for b in range(xs.shape[0]):
            c = tree_index(carry, b)
            steps = range(T if lengths is None else int(lengths[b]))
            for t in reversed(steps) if reverse else steps:
                c, y = step(p, c, xs[b, t])
                out.append(y)
            out.extend(np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(c))
        return np.concatenate([np.ravel(o) for o in out])

    perturb = lambda r, a: a * (1.0 + EPS32 * r.uniform(-1.0, 1.0, np.shape(a)))  # noqa: E731
    exact = outputs(p64, xs64, carry64)
    spread = 0.0
    for seed in range(draws):
        r = np.random.default_rng(seed)
        moved = outputs(
            {k: perturb(r, v) for k, v in p64.items()},
            perturb(r, xs64),
            jax.tree_util.tree_map(functools.partial(perturb, r), carry64),
        )
        spread = max(spread, float(np.abs(moved - exact).max()))
    return dict(atol=TOL["atol"] + 4.0 * spread, rtol=TOL["rtol"])


# --- every family x direction x padding x hoisting ------------------------------------


@pytest.mark.parametrize("hoisted", [True, False], ids=["hoisted", "user-cell"])
@pytest.mark.parametrize("name", families())
def test_unroll_matches_loop(name, hoisted, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))
    run_cell = cell if hoisted else user_cell(cell)
    cases = {
        f"{direction}-{padding}": dict(
            reverse=direction == "reverse",
            seq_lengths=LENGTHS if padding == "masked" else None,
        )
        for direction in ("forward", "reverse")
        for padding in ("masked", "unmasked")
    }

    @jax.jit
    def run(params, xs, carry0):
        return {
            case: rj.unroll(run_cell, params, xs, initial_carry=carry0, **kw)
            for case, kw in cases.items()
        }

    got = run(params, xs, carry0)
    step = one_step(cell, params)
    for case, kw in cases.items():
        valid = None if kw["seq_lengths"] is None else prefix_mask(LENGTHS)
        want_carry, want_ys, _, _ = loop_unroll(
            step, carry0, xs, valid=valid, reverse=kw["reverse"]
        )
        carry, ys = got[case]
        assert ys.shape == (B, T, cell.hidden_size), case
        tol = rounding_tolerance(
            name, params, carry0, xs, lengths=kw["seq_lengths"], reverse=kw["reverse"]
        )
        assert_trees_close(ys, want_ys, **tol)
        assert_trees_close(carry, want_carry, **tol)
        if kw["seq_lengths"] is not None:  # the empty sequence keeps carry0
            assert_trees_close(tree_index(carry, 1), tree_index(carry0, 1), atol=0.0)
            np.testing.assert_array_equal(np.asarray(ys)[1], 0.0)
            np.testing.assert_array_equal(np.asarray(ys)[2, 3:], 0.0)


def test_two_batch_dims_and_empty_sequences(rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (2, 3, T, D))
    lengths = np.array([[T, 0, 2], [1, 4, 0]])
    carry0 = random_carry(cell, rng, (2, 3))
    run = jax.jit(
        lambda p, x, c: [
            rj.unroll(cell, p, x, initial_carry=c, seq_lengths=lengths, reverse=r)
            for r in (False, True)
        ]
    )
    for reverse, (carry, ys) in zip((False, True), run(params, xs, carry0), strict=True):
        want_carry, want_ys, _, _ = loop_unroll(
            one_step(cell, params), carry0, xs, valid=prefix_mask(lengths), reverse=reverse
        )
        assert ys.shape == (2, 3, T, H)
        assert_trees_close(ys, want_ys, **TOL)
        assert_trees_close(carry, want_carry, **TOL)
        for idx in [(0, 1), (1, 2)]:  # length 0: the initial carry, zero outputs
            assert_trees_close(tree_index(carry, idx), tree_index(carry0, idx), atol=0.0)
            np.testing.assert_array_equal(np.asarray(ys)[idx], 0.0)


def test_no_batch_dims(rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (T, D))
    run = jax.jit(
        lambda p, x: (
            rj.unroll(cell, p, x, seq_lengths=np.array(3)),
            rj.unroll(cell, p, x[None], seq_lengths=np.array([3])),
        )
    )
    (carry, ys), (carry_b, ys_b) = run(params, xs)
    assert ys.shape == (T, H) and carry.shape == (H,)
    assert_trees_close(ys, ys_b[0], atol=1e-6)
    assert_trees_close(carry, carry_b[0], atol=1e-6)


def test_zero_initial_carry_is_the_default(rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))
    zeros = cell.initial_carry((B,))
    run = jax.jit(lambda p, x: (rj.unroll(cell, p, x), rj.unroll(cell, p, x, initial_carry=zeros)))
    default, given = run(params, xs)
    assert_trees_close(default, given, atol=0.0)


def test_time_major(rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    mask = prefix_mask(LENGTHS)

    @jax.jit
    def run(params, xs):
        batch_major = rj.unroll(cell, params, xs, mask=mask, reverse=True)
        xs_tm = jnp.swapaxes(xs, 0, 1)
        time_major = rj.unroll(cell, params, xs_tm, mask=mask.T, reverse=True, time_major=True)
        lengths_tm = rj.unroll(cell, params, xs_tm, seq_lengths=LENGTHS, time_major=True)
        return batch_major, time_major, lengths_tm, rj.unroll(cell, params, xs, seq_lengths=LENGTHS)

    (c_bm, ys_bm), (c_tm, ys_tm), (c_ltm, ys_ltm), (c_l, ys_l) = run(params, xs)
    assert ys_tm.shape == (T, B, H)
    assert_trees_close(jnp.swapaxes(ys_tm, 0, 1), ys_bm, atol=1e-6)
    assert_trees_close(c_tm, c_bm, atol=1e-6)
    assert_trees_close(jnp.swapaxes(ys_ltm, 0, 1), ys_l, atol=1e-6)
    assert_trees_close(c_ltm, c_l, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_mask_equals_seq_lengths(reverse, rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))

    @jax.jit
    def run(params, xs):
        kw = dict(reverse=reverse, return_carries=True)
        return (
            rj.unroll(cell, params, xs, seq_lengths=LENGTHS, **kw),
            rj.unroll(cell, params, xs, mask=prefix_mask(LENGTHS), **kw),
            rj.unroll(cell, params, xs, seq_lengths=jnp.asarray(LENGTHS), **kw),
        )

    by_lengths, by_mask, by_traced_lengths = run(params, xs)
    assert_trees_close(by_mask, by_lengths, atol=0.0)
    assert_trees_close(by_traced_lengths, by_lengths, atol=0.0)


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_length_mask_against_a_loop(batch_shape, rng):
    num_steps = 4
    lengths = rng.integers(0, num_steps + 1, batch_shape)
    want = np.zeros((*batch_shape, num_steps), bool)
    for index in np.ndindex(*batch_shape):
        for t in range(num_steps):
            want[(*index, t)] = t < lengths[index]
    got = rj.length_mask(jnp.asarray(lengths), num_steps)
    assert got.dtype == jnp.bool_ and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_length_mask_rejects_bad_input():
    with pytest.raises(TypeError, match="seq_lengths: expected integers, got"):
        rj.length_mask(jnp.ones((3,)), 4)
    with pytest.raises(ValueError, match="num_steps: expected a non-negative int, got -1"):
        rj.length_mask(jnp.ones((3,), jnp.int32), -1)


@pytest.mark.parametrize("reverse", [False, True])
def test_mask_with_holes_skips_the_masked_steps(reverse, rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    mask = np.array(
        [[True, False, True, True, False], [False] * T, [False, True, True, False, True]]
    )
    carry0 = random_carry(cell, rng, (B,))
    run = jax.jit(
        lambda p, x, c: rj.unroll(cell, p, x, mask=mask, reverse=reverse, initial_carry=c)
    )
    carry, ys = run(params, xs, carry0)
    want_carry, want_ys, _, _ = loop_unroll(
        one_step(cell, params), carry0, xs, valid=mask, reverse=reverse
    )
    assert_trees_close(ys, want_ys, **TOL)
    assert_trees_close(carry, want_carry, **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_return_carries_and_keep_order(reverse, rng):
    cell, params = make("lstm-proj", rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))

    @jax.jit
    def run(params, xs, carry0):
        kw = dict(initial_carry=carry0, seq_lengths=LENGTHS, reverse=reverse, return_carries=True)
        return (
            rj.unroll(cell, params, xs, **kw),
            rj.unroll(cell, params, xs, keep_order=False, **kw),
        )

    (final, ys, carries), (final_p, ys_p, carries_p) = run(params, xs, carry0)
    want_final, want_ys, want_carries, want_processed = loop_unroll(
        one_step(cell, params), carry0, xs, valid=prefix_mask(LENGTHS), reverse=reverse
    )
    assert isinstance(carries, rj.LSTMCarry)
    assert carries.h.shape == (B, T, cell.hidden_size) and carries.c.shape == (B, T, H)
    assert_trees_close(ys, want_ys, **TOL)
    assert_trees_close(final, want_final, **TOL)
    assert_trees_close(carries, want_carries, **TOL)
    assert_trees_close(final_p, final, atol=0.0)
    if reverse:  # processing order: y_0 is the output after reading x_{len-1}
        assert_trees_close(ys_p, want_processed, **TOL)
    else:  # keep_order only matters in reverse
        assert_trees_close((ys_p, carries_p), (ys, carries), atol=0.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_restart_from_the_initial_carry(reverse, rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))
    resets = rng.random((B, T)) < 0.4
    resets[0, 2] = True
    every = np.ones((B, T), bool)

    @jax.jit
    def run(params, xs, carry0):
        kw = dict(initial_carry=carry0, reverse=reverse)
        return [rj.unroll(cell, params, xs, resets=r, **kw) for r in (resets, every)]

    (carry, ys), (_, ys_all) = run(params, xs, carry0)
    want_carry, want_ys, _, _ = loop_unroll(
        one_step(cell, params), carry0, xs, resets=resets, reverse=reverse
    )
    assert_trees_close(ys, want_ys, **TOL)
    assert_trees_close(carry, want_carry, **TOL)
    # A reset at every step makes each output depend on its own input only.
    for t in range(T):
        _, y = one_step(cell, params)(carry0, xs[:, t])
        np.testing.assert_allclose(ys_all[:, t], y, **TOL)


def test_resets_with_reset_carry_and_valid_lengths(rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))
    restart = random_carry(cell, rng, (B,))
    resets = np.zeros((B, T), bool)
    resets[0, [1, 3]] = True
    resets[2, 1] = True  # all resets inside the valid part of each sequence
    carry, ys = rj.unroll(
        cell,
        params,
        xs,
        initial_carry=carry0,
        resets=resets,
        reset_carry=restart,
        seq_lengths=LENGTHS,
    )
    want_carry, want_ys, _, _ = loop_unroll(
        one_step(cell, params),
        carry0,
        xs,
        valid=prefix_mask(LENGTHS),
        resets=resets,
        reset_carry=restart,
    )
    assert_trees_close(ys, want_ys, **TOL)
    assert_trees_close(carry, want_carry, **TOL)


def test_reset_at_a_padded_step_keeps_the_final_carry(rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    resets = np.zeros((B, T), bool)
    resets[2, 4] = True  # sequence 2 has length 3: step 4 is padding
    run = jax.jit(
        lambda p, x: (
            rj.unroll(cell, p, x, seq_lengths=LENGTHS, resets=resets)[0],
            rj.unroll(cell, p, x, seq_lengths=LENGTHS)[0],
        )
    )
    carry, want = run(params, xs)
    assert_trees_close(carry, want, atol=1e-6)


def test_unroll_factor_does_not_change_results(rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))

    @jax.jit
    def run(params, xs):
        return [
            rj.unroll(cell, params, xs, seq_lengths=LENGTHS, reverse=True, impl=impl, unroll=u)
            for impl in ("scan", "fused")
            for u in (1, 3)
        ]

    results = run(params, xs)
    # Bit-identical for this cell today; unrolling may change XLA's fusion and
    # so the last ulp in general (LayerNorm LSTM: 1e-7), hence atol 1e-6.
    for other in results[1:]:
        assert_trees_close(other, results[0], atol=1e-6)


@pytest.mark.parametrize(
    "name, impl",
    [("lstm", "auto"), ("s5", "associative"), ("d-linoss", "chunked"), ("s6", "chunked")],
)
def test_vmap_over_params_equals_a_loop(name, impl, rng):
    cell = (CELLS | STATE_SPACE_CELLS)[name]()
    stacked_list = [random_params(cell, rng) for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *stacked_list)
    xs = normal(rng, (B, T, D))

    def run(params):
        kw = dict(seq_lengths=LENGTHS, reverse=True, impl=impl, chunk_length=2)
        return rj.unroll(cell, params, xs, **kw)

    carry, ys = jax.jit(jax.vmap(run))(stacked)
    assert ys.shape == (3, B, T, H)
    run = jax.jit(run)
    for i, params in enumerate(stacked_list):
        assert_trees_close(tree_index((carry, ys), i), run(params), **TOL)


def test_no_retracing_for_same_shapes(rng):
    cell, params = make("gru", rng)
    traces = []

    @jax.jit
    def run(params, xs, lengths):
        traces.append(None)  # runs once per trace
        return rj.unroll(cell, params, xs, seq_lengths=lengths)

    for _ in range(3):
        other = random_params(cell, rng)
        run(other, normal(rng, (B, T, D)), jnp.asarray(rng.integers(0, T + 1, B), jnp.int32))
    assert len(traces) == 1


# --- gradients -------------------------------------------------------------------


@pytest.mark.parametrize("name", families(fast=("lstm",)))
def test_gradients_of_scan(name, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (2, 4, D))
    carry0 = random_carry(cell, rng, (2,))
    lengths = np.array([4, 2])

    @jax.jit
    def f(params, xs, carry0):
        carry, ys = rj.unroll(
            cell, params, xs, initial_carry=carry0, seq_lengths=lengths, reverse=True, impl="scan"
        )
        return ys, carry

    check_grads(f, (params, xs, carry0), order=1, modes=["rev"], atol=1e-2, rtol=1e-2, eps=1e-3)


# --- regularisers -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", pytest.param("mgu", marks=pytest.mark.slow)])
def test_deterministic_turns_dropout_off(name, rng, key):
    cell, params = make(name, rng)
    xs = normal(rng, (B, T, D))

    @jax.jit
    def run(params, xs):
        plain = rj.unroll(cell, params, xs, seq_lengths=LENGTHS)
        rates = dict(dropout=0.3, recurrent_dropout=0.4, seq_lengths=LENGTHS, deterministic=True)
        return plain, [rj.unroll(cell, params, xs, key=k, **rates) for k in (key, None)]

    plain, evaluated = run(params, xs)
    for other in evaluated:
        assert_trees_close(other, plain, atol=0.0)


def probe_elman(input_weight, recurrent_weight, size=H):
    """An Elman ReLU cell with the given w_ih, w_hh (scaled identities) and no bias."""
    cell = rj.cells.elman(size, activation="relu", bias="none")
    eye = np.eye(size, dtype=np.float32)
    return cell, {
        "w_ih": jnp.asarray(input_weight * eye),
        "w_hh": jnp.asarray(recurrent_weight * eye),
    }


def test_input_dropout_mask_is_fixed_over_time(key, rng):
    # y_t = relu(x ⊙ m): with x constant over time, every y_t shows the mask.
    cell, params = probe_elman(1.0, 0.0)
    rate, batch = 0.5, 8
    x = jnp.asarray(1.0 + rng.random((batch, 1, H)), jnp.float32)
    xs = jnp.broadcast_to(x, (batch, T, H))
    run = jax.jit(lambda k: rj.unroll(cell, params, xs, dropout=rate, key=k)[1])
    ys = np.asarray(run(key))
    np.testing.assert_array_equal(ys, np.broadcast_to(ys[:, :1], ys.shape))
    ratio = ys[:, 0] / np.asarray(x)[:, 0]
    np.testing.assert_allclose(np.where(ratio > 0, ratio, 2.0), 1.0 / (1.0 - rate), rtol=1e-6)
    assert 0 < (ratio == 0).sum() < ratio.size
    # one mask per sequence: the rows differ
    assert len({tuple(row) for row in (ratio > 0)}) > 1
    # the same key gives the same mask, another key another one
    np.testing.assert_array_equal(np.asarray(run(key)), ys)
    assert np.abs(np.asarray(run(jax.random.PRNGKey(1))) - ys).max() > 0


def test_recurrent_dropout_mask_is_fixed_over_time(key):
    # w_ih = 0, w_hh = I, h_0 = 1: h_t = relu(h_{t-1} ⊙ m) = m^(t+1) iff m is
    # the same at every step.
    cell, params = probe_elman(0.0, 1.0)
    rate, batch = 0.5, 8
    xs = jnp.zeros((batch, T, H))
    carry0 = jnp.ones((batch, H))

    @jax.jit
    def run(params, xs, carry0):
        return rj.unroll(cell, params, xs, initial_carry=carry0, recurrent_dropout=rate, key=key)

    ys = np.asarray(run(params, xs, carry0)[1], np.float64)
    mask = ys[:, 0]
    assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - rate)}
    for t in range(T):
        np.testing.assert_allclose(ys[:, t], mask ** (t + 1), rtol=1e-6)
    assert len({tuple(row) for row in mask}) > 1  # one mask per sequence
    # The input path is not masked: with w_hh = 0 recurrent dropout is a no-op.
    _, params = probe_elman(1.0, 0.0)
    xs = jnp.ones((batch, T, H))
    _, ys = run(params, xs, jnp.zeros((batch, H)))
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(xs))


def binary_masks(size, rate):
    return np.array(list(itertools.product([0.0, 1.0 / (1.0 - rate)], repeat=size)), np.float32)


def explained_by_one_mask(outputs, candidates):
    """Index of the only candidate output equal to ``outputs`` (else fails)."""
    err = np.abs(np.asarray(candidates) - np.asarray(outputs)[None]).reshape(len(candidates), -1)
    matches = np.flatnonzero(err.max(1) < 1e-4)  # LayerNorm amplifies rounding
    assert len(matches) == 1, (matches, err.max(1).min())
    return matches[0]


@pytest.mark.parametrize(
    "name, impl",
    [
        ("gru", "auto"),
        pytest.param("lstm-all", "auto", marks=pytest.mark.slow),
        pytest.param("lstm-all", "scan", marks=pytest.mark.slow),
        pytest.param("gru-before", "scan", marks=pytest.mark.slow),
        pytest.param("mgu", "scan", marks=pytest.mark.slow),
    ],
)
def test_dropout_masks_act_as_fixed_weight_masks(name, impl, rng, fast_key):
    """For one sequence, input dropout with mask m equals no dropout with the
    rows of w_ih scaled by m, and recurrent dropout equals scaling the rows of
    w_hh (every cell reads x and h_{t-1} only through those GEMMs). Exactly
    one of the 2^K candidate masks explains the whole sequence, so the mask is
    the same at every step."""
    cell, params = make(name, rng)
    xs = normal(rng, (1, T, D))
    rate = 0.5
    rec_size = params["w_hh"].shape[0]

    def scaled(params, w, mask):
        return params | {w: params[w] * mask[:, None]}

    keys = jax.random.split(fast_key, 4)

    @jax.jit
    def run(params, xs):
        def dropped(**rates):
            return jax.vmap(lambda k: rj.unroll(cell, params, xs, impl=impl, key=k, **rates)[1])

        by_input = jax.vmap(lambda m: rj.unroll(cell, scaled(params, "w_ih", m), xs)[1])
        by_recurrent = jax.vmap(lambda m: rj.unroll(cell, scaled(params, "w_hh", m), xs)[1])
        return (
            dropped(dropout=rate)(keys),
            by_input(binary_masks(D, rate)),
            dropped(recurrent_dropout=rate)(keys),
            by_recurrent(binary_masks(rec_size, rate)),
        )

    ys_in, cands_in, ys_rec, cands_rec = run(params, xs)
    for ys, candidates in [(ys_in, cands_in), (ys_rec, cands_rec)]:
        found = {explained_by_one_mask(ys[i], candidates) for i in range(len(keys))}
        assert len(found) > 1  # the keys draw different masks: not all "keep all"


def test_zoneout_keeps_or_updates_each_unit(rng, fast_key):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))
    rate = 0.5
    carry0 = random_carry(cell, rng, (B,))

    @jax.jit
    def run(params, xs, carry0):
        kw = dict(initial_carry=carry0, return_carries=True)
        return (
            rj.unroll(cell, params, xs, zoneout=rate, key=fast_key, **kw),
            rj.unroll(cell, params, xs, **kw),
        )

    (_, ys, carries), (_, plain, _) = run(params, xs, carry0)
    assert np.abs(np.asarray(ys) - np.asarray(plain)).max() > 1e-3
    step = one_step(cell, params)
    kept = updated = 0
    previous = carry0
    for t in range(T):
        current = tree_index(carries, (slice(None), t))
        new, _ = step(previous, xs[:, t])
        for old_leaf, new_leaf, got in zip(previous, new, current, strict=True):
            old_leaf, new_leaf, got = (np.asarray(a) for a in (old_leaf, new_leaf, got))
            is_old = np.isclose(got, old_leaf, atol=1e-6)
            is_new = np.isclose(got, new_leaf, atol=1e-6)
            assert np.all(is_old | is_new), t
            kept += int((is_old & ~is_new).sum())
            updated += int((is_new & ~is_old).sum())
        previous = current
    assert kept > 0 and updated > 0


@pytest.mark.parametrize("name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_zoneout_at_evaluation_averages_old_and_new(name, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (B, T, D))
    carry0 = random_carry(cell, rng, (B,))
    rate = 0.3
    carry, ys = rj.unroll(
        cell,
        params,
        xs,
        initial_carry=carry0,
        seq_lengths=LENGTHS,
        zoneout=rate,
        deterministic=True,
    )
    want_carry, want_ys, _, _ = loop_unroll(
        one_step(cell, params), carry0, xs, valid=prefix_mask(LENGTHS), zoneout=rate
    )
    assert_trees_close(ys, want_ys, **TOL)
    assert_trees_close(carry, want_carry, **TOL)


@pytest.mark.parametrize("rate_name", ["dropout", "recurrent_dropout", "zoneout"])
def test_active_regulariser_needs_a_key(rate_name, rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    with pytest.raises(ValueError, match="key"):
        jax.eval_shape(lambda p, x: rj.unroll(cell, p, x, **{rate_name: 0.2}), params, xs)
    # evaluation mode needs none
    jax.eval_shape(
        lambda p, x: rj.unroll(cell, p, x, deterministic=True, **{rate_name: 0.2}), params, xs
    )
