"""``rj.online.stack`` against independent oracles, float64.

- One layer: the stack is its learner, so RTRL's summed gradient equals
  ``jax.grad`` of the BPTT loss over ``rj.unroll`` (1e-10), with padding
  and resets.
- Two layers (an LRU under a minGRU): the summed gradient equals a
  brute-force "truncated in depth" gradient built from plain unrolls (at
  each step t, the lower layer unrolled over the prefix x_{≤t} with its
  params live, the upper layer's carry h²_{t−1} from the lower layer's
  outputs computed with its params held constant), 1e-10; it equals BPTT
  for the upper layer and the head and differs from it in the lower layer.
- UORO layers take the stack's key; a stack without one refuses a key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import random_params

import recurrent_jax as rj

F64 = jnp.float64
EXACT = dict(atol=1e-10, rtol=1e-10)  # float64 sums over 6 steps: rounding ~1e-15
B, T, D, H = 3, 6, 3, 4
LENGTHS = (T, T - 2, 1)


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (conftest)


def squared_error(head, y, target):
    return 0.5 * jnp.sum((y @ head - target) ** 2)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    cells = (rj.cells.lru(H, state_size=3, param_dtype=F64), rj.cells.mingru(H, param_dtype=F64))
    params = {
        "layer_0": random_params(cells[0], rng, D),
        "layer_1": random_params(cells[1], rng, H),
    }
    data = lambda *shape: jnp.asarray(rng.standard_normal(shape), F64)  # noqa: E731
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True).at[1, 1].set(True)
    options = dict(seq_lengths=jnp.array(LENGTHS), resets=resets)
    return cells, params, data(B, T, D), data(H, 2), data(B, T, 2), options


def valid_steps(t):
    return jnp.array(LENGTHS) > t


def assert_trees_close(got, want, **tolerance):
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(g, w, err_msg=jax.tree_util.keystr(path), **tolerance)


def test_one_layer_is_bptt_with_padding_and_resets():
    (cell, _), params, xs, head, targets, options = problem()
    learner = rj.online.stack([rj.online.rtrl(cell, D)])
    one = {"layer_0": params["layer_0"]}
    online = jax.jit(
        lambda p, h: rj.online.accumulate(learner, p, xs, squared_error, h, targets, **options)[1]
    )(one, head)

    def bptt(p, h):
        _, ys = rj.unroll(cell, p["layer_0"], xs, impl="scan", **options)
        return sum(squared_error(h, ys[:, t], targets[:, t]) for t in range(T))

    want = jax.grad(bptt, argnums=(0, 1))(one, head)
    assert_trees_close((online.grads, online.head_grads), want, **EXACT)


def truncated_in_depth(cells, params, head, xs, targets, options):
    """Σ_t ∇ L_t with the upper layer's past carry held constant in the lower
    layer's params (brute force over prefixes of plain unrolls)."""
    lower, upper = cells

    def loss(params, head):
        _, fixed = rj.unroll(
            lower, jax.lax.stop_gradient(params["layer_0"]), xs, impl="scan", **options
        )
        total = 0.0
        for t in range(T):
            prefix = {k: v[:, : t + 1] for k, v in options.items() if k == "resets"}
            lengths = jnp.minimum(options["seq_lengths"], t + 1)
            _, ys0 = rj.unroll(
                lower, params["layer_0"], xs[:, : t + 1], impl="scan",
                seq_lengths=lengths, **prefix,
            )  # fmt: skip
            inputs1 = jnp.concatenate([fixed[:, :t], ys0[:, t : t + 1]], axis=1)
            _, ys1 = rj.unroll(
                upper, params["layer_1"], inputs1, impl="scan", seq_lengths=lengths, **prefix
            )
            y = jnp.where(valid_steps(t)[:, None], ys1[:, t], 0.0)
            total = total + squared_error(head, y, targets[:, t])
        return total

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, head)


@pytest.mark.slow
def test_two_layers_are_truncated_in_depth_and_differ_from_bptt():
    cells, params, xs, head, targets, options = problem()
    learner = rj.online.stack([rj.online.rtrl(cells[0], D), rj.online.rtrl(cells[1], H)])
    online = jax.jit(
        lambda p, h: rj.online.accumulate(learner, p, xs, squared_error, h, targets, **options)[1]
    )(params, head)
    want = truncated_in_depth(cells, params, head, xs, targets, options)
    assert_trees_close((online.grads, online.head_grads), want, **EXACT)

    def bptt(p, h):
        _, ys0 = rj.unroll(cells[0], p["layer_0"], xs, impl="scan", **options)
        _, ys1 = rj.unroll(cells[1], p["layer_1"], ys0, impl="scan", **options)
        return sum(squared_error(h, ys1[:, t], targets[:, t]) for t in range(T))

    grads, head_grads = jax.grad(bptt, argnums=(0, 1))(params, head)
    assert_trees_close(
        (online.grads["layer_1"], online.head_grads), (grads["layer_1"], head_grads), **EXACT
    )
    got, full = online.grads["layer_0"]["nu_log"], grads["layer_0"]["nu_log"]
    assert np.linalg.norm(got - full) > 1e-3 * np.linalg.norm(full)


def test_uoro_layers_take_the_stacks_key():
    cells, params, xs, head, targets, _ = problem()
    learner = rj.online.stack([rj.online.rtrl(cells[0], D), rj.online.uoro(cells[1])])
    with pytest.raises(
        ValueError, match=r"key: the stack takes a key for its UORO layers, got None"
    ):
        learner.init(params, (B,))
    run = jax.jit(
        lambda key: rj.online.accumulate(
            learner, params, xs, squared_error, head, targets, key=key
        )[1].grads["layer_1"]
    )
    first, again, other = (
        np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(run(jax.random.key(k)))])
        for k in (0, 0, 1)
    )
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    deterministic = rj.online.stack([rj.online.rtrl(cells[0], D)])
    with pytest.raises(ValueError, match=r"key: the stack takes no key \(no UORO layer\)"):
        deterministic.init({"layer_0": params["layer_0"]}, (B,), jax.random.key(0))
