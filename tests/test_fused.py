"""``impl="fused"`` (custom VJP, weight gradients as single GEMMs) against
``impl="scan"`` (autodiff of lax.scan): values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    CELLS,
    H,
    assert_trees_close,
    auto_backend_for_plain_cells,
    make,
    normal,
    random_carry,
    random_params,
)

import recurrent_jax as rj

T, D = 5, 3
TOL = dict(atol=1e-5, rtol=1e-5)  # fp32

# Cells with a ``pointwise`` split (the fused backward applies to them).
FUSABLE = [
    "lstm",
    "lstm-single",
    "lstm-none",
    "lstm-proj",
    "lstm-peephole",
    "lstm-ln",
    "lstm-all",
    "gru",
    "gru-single",
    "gru-none",
    "elman-tanh",
    "elman-relu",
]

# Scenario: batch shape and unroll options.
SCENARIOS = {
    # seq_lengths with empty sequences, reverse, two batch dims.
    "lengths-reverse": dict(
        batch=(2, 3),
        options=dict(seq_lengths=np.array([[T, 0, 2], [3, T, 1]]), reverse=True),
    ),
    # all three regularisers active, the same key for both impls.
    "train": dict(
        batch=(3,),
        options=dict(
            seq_lengths=np.array([T, 0, 3]),
            dropout=0.2,
            recurrent_dropout=0.3,
            zoneout=0.25,
        ),
    ),
    # a prefix mask, reverse, zoneout averaged at evaluation (dropout off).
    "mask-eval": dict(
        batch=(3,),
        options=dict(
            mask=np.arange(T) < np.array([T, 2, 4])[:, None],
            reverse=True,
            zoneout=0.25,
            recurrent_dropout=0.3,
            deterministic=True,
        ),
    ),
}

# The default run; `-m slow` runs every cell x scenario (XLA's CPU compile of
# these value-and-grad pairs costs 1-5 s each).
FAST = {("lstm-proj", "lengths-reverse"), ("elman-relu", "train"), ("gru", "mask-eval")}


def cases():
    for name in FUSABLE:
        for scenario in SCENARIOS:
            marks = () if (name, scenario) in FAST else (pytest.mark.slow,)
            yield pytest.param(name, scenario, marks=marks, id=f"{name}-{scenario}")


def loss_and_grads(cell, options, key, ys_weight, carry_weight):
    """jit(value_and_grad) of a weighted sum of ys and the final carry, w.r.t.
    params, xs and the initial carry, for each impl."""

    def loss(impl, params, xs, carry0):
        carry, ys = rj.unroll(cell, params, xs, initial_carry=carry0, key=key, impl=impl, **options)
        carry_term = sum(
            jnp.sum(c * w)
            for c, w in zip(
                jax.tree_util.tree_leaves(carry),
                jax.tree_util.tree_leaves(carry_weight),
                strict=True,
            )
        )
        return jnp.sum(ys * ys_weight) + carry_term, (carry, ys)

    def both(params, xs, carry0):
        return {
            impl: jax.value_and_grad(
                lambda *a, impl=impl: loss(impl, *a), argnums=(0, 1, 2), has_aux=True
            )(params, xs, carry0)
            for impl in ("fused", "scan")
        }

    return jax.jit(both)


@pytest.mark.parametrize("name, scenario", list(cases()))
def test_fused_matches_scan(name, scenario, rng, fast_key):
    case = SCENARIOS[scenario]
    batch = case["batch"]
    cell, params = make(name, rng)
    xs = normal(rng, (*batch, T, D))
    carry0 = random_carry(cell, rng, batch)
    ys_weight = normal(rng, (*batch, T, cell.hidden_size))
    carry_weight = random_carry(cell, rng, batch, scale=1.0)
    results = loss_and_grads(cell, case["options"], fast_key, ys_weight, carry_weight)(
        params, xs, carry0
    )
    (value_f, outs_f), grads_f = results["fused"]
    (value_s, outs_s), grads_s = results["scan"]
    assert_trees_close(outs_f, outs_s, **TOL)
    np.testing.assert_allclose(value_f, value_s, **TOL)
    d_params, d_xs, d_carry0 = grads_f
    assert set(d_params) == set(params)
    assert_trees_close(grads_f, grads_s, **TOL)
    # The gradients are not trivially zero.
    assert np.abs(np.asarray(d_params["w_hh"])).max() > 1e-3
    assert max(np.abs(np.asarray(g)).max() for g in jax.tree_util.tree_leaves(d_carry0)) > 1e-3


@pytest.mark.parametrize(
    "name", ["gru", *(pytest.param(n, marks=pytest.mark.slow) for n in ("lstm", "lstm-all"))]
)
def test_fused_matches_scan_in_bf16(name, rng):
    """bf16 GEMMs: the two impls round differently (the fused backward does the
    weight-gradient GEMM once over all steps), so the tolerance is 2e-2 on
    values and 3e-2 of the largest entry on gradients."""
    cell, params = make(name, rng, dtype=jnp.bfloat16)
    batch = (3,)
    xs = normal(rng, (*batch, T, D))
    carry0 = random_carry(cell, rng, batch)
    options = dict(seq_lengths=np.array([T, 2, 4]), reverse=True)
    ys_weight = normal(rng, (*batch, T, cell.hidden_size))
    carry_weight = random_carry(cell, rng, batch, scale=1.0)
    results = loss_and_grads(cell, options, None, ys_weight, carry_weight)(params, xs, carry0)
    (_, outs_f), grads_f = results["fused"]
    (_, outs_s), grads_s = results["scan"]
    assert_trees_close(outs_f, outs_s, atol=2e-2)
    for g_f, g_s in zip(
        jax.tree_util.tree_leaves(grads_f), jax.tree_util.tree_leaves(grads_s), strict=True
    ):
        assert g_f.dtype == g_s.dtype
        scale = max(float(np.abs(np.asarray(g_s, np.float32)).max()), 1e-3)
        np.testing.assert_allclose(
            np.asarray(g_f, np.float32), np.asarray(g_s, np.float32), atol=3e-2 * scale
        )


@pytest.mark.parametrize(
    "name, kwargs, blocker",
    [
        ("mgu", {}, "mgu"),
        ("gru-before", {}, "gru"),
        ("lstm", {"resets": np.zeros((2, T), bool)}, "resets"),
        ("lstm", {"return_carries": True}, "return_carries"),
    ],
)
def test_fused_refuses_what_it_cannot_run(name, kwargs, blocker, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (2, T, D))
    with pytest.raises(ValueError, match=rf"impl(.|\n)*{blocker}"):
        jax.eval_shape(lambda p, x: rj.unroll(cell, p, x, impl="fused", **kwargs), params, xs)


@pytest.mark.parametrize(
    "name, kwargs, fused",
    [
        ("lstm", {}, True),
        ("gru", {}, True),
        ("elman-tanh", {}, True),
        ("mgu", {}, False),
        ("gru-before", {}, False),
        ("lstm", {"resets": np.zeros((2, T), bool)}, False),
        ("lstm", {"return_carries": True}, False),
    ],
)
def test_auto_picks_fused_where_it_applies(name, kwargs, fused, rng):
    """Fused where it applies and no faster path does (the C++ backend, where
    it built, takes plain LSTMs and GRUs, resets and per-step carries too)."""
    cell, params = make(name, rng)
    xs = normal(rng, (2, T, D))
    f = jax.jit(lambda p, x: rj.unroll(cell, p, x, **kwargs))
    text = f.lower(params, xs).as_text(debug_info=True)
    native = auto_backend_for_plain_cells() == "cpu" and name in ("lstm", "gru")
    assert ("recurrent_jax.fused" in text) == (fused and not native)
    assert ("recurrent_jax.cpu" in text) == native


def test_fused_under_vmap_and_jit(rng):
    """Per-run params of a vmapped sweep: values and per-run gradients of the
    fused impl equal a loop over runs with the scan impl."""
    cell = CELLS["elman-tanh"]()
    runs = [random_params(cell, rng) for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *runs)
    xs = normal(rng, (2, T, D))
    lengths = np.array([T, 3])

    def loss(params, impl):
        carry, ys = rj.unroll(cell, params, xs, seq_lengths=lengths, reverse=True, impl=impl)
        return jnp.sum(ys**2) + jnp.sum(carry)

    got = jax.jit(jax.vmap(jax.value_and_grad(lambda p: loss(p, "fused"))))(stacked)
    solo = jax.jit(jax.value_and_grad(lambda p: loss(p, "scan")))
    for i, params in enumerate(runs):
        assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], got), solo(params), **TOL)
    assert got[1]["w_hh"].shape == (3, H, H)
