"""``impl="cpu"``, the C++ recurrences of the CPU extension, against the plain
scan: values, final carries and gradients over padding (lengths 0 and 1),
reverse, initial carries, resets and packed rows, several batch dims, row
counts off the kernel's blocks and threads, and ``jax.vmap`` over runs with
their own weights; and the library without the extension (no compiler, or
switched off)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, make, normal, random_carry, random_params

import recurrent_jax as rj
from recurrent_jax import cpu

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or cpu.unavailable() is not None,
    reason=f"the CPU extension does not run here: {cpu.unavailable()}",
)

T, D = 7, 3
VALUES = dict(atol=1e-5, rtol=1e-5)
# Built with -ffast-math (vector expf/tanhf, reassociated sums): gradients
# through 7 steps agree with XLA's to a few fp32 ulps of their size.
GRADS = dict(atol=3e-5, rtol=3e-5)


def both(name, rng, batch, lengths, *, reverse=False):
    cell, params = make(name, rng)
    xs = normal(rng, (*batch, T, D))
    carry0 = random_carry(cell, rng, batch)
    kw = dict(initial_carry=carry0, reverse=reverse, seq_lengths=lengths)

    def outputs(impl):
        def f(p, x, c):
            return rj.unroll(cell, p, x, impl=impl, **dict(kw, initial_carry=c))

        def loss(p, x, c):
            return sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(f(p, x, c)))

        args = (params, xs, carry0)
        return jax.jit(f)(*args), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)

    return outputs("cpu"), outputs("scan")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", ["lstm", "lstm-single", "gru", "gru-single", "gru-none"])
def test_cpu_equals_the_scan(name, reverse, rng):
    lengths = np.array([T, 0, 3, 1, 5])
    (values, grads), (want_values, want_grads) = both(name, rng, (5,), lengths, reverse=reverse)
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **GRADS)
    np.testing.assert_array_equal(np.asarray(values[1])[1], 0.0)  # length 0


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_rows_over_threads_and_batch_dims(name, rng):
    """3 x 13 = 39 rows: slices of 8 rows on each core plus a ragged edge."""
    lengths = rng.integers(0, T + 1, (3, 13))
    (values, grads), (want_values, want_grads) = both(name, rng, (3, 13), lengths)
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **GRADS)


@pytest.mark.parametrize("reset_carry", [False, True], ids=["from the initial carry", "given"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_resets_equal_the_scan(name, reverse, reset_carry, rng):
    """Restarts on the native path: values, final and per-step carries and
    gradients (of params, inputs, the initial and the reset carry, through
    all three outputs), with resets on padded steps (ignored) and at step 0."""
    cell, params = make(name, rng)
    batch = (11,)  # a ragged edge past the 8-row blocks
    xs = normal(rng, (*batch, T, D))
    carry0, restart = random_carry(cell, rng, batch), random_carry(cell, rng, batch)
    resets = rng.random((*batch, T)) < 0.3
    resets[:, 0] = True
    lengths = rng.integers(0, T + 1, batch)

    def outputs(impl):
        def f(p, x, c, r):
            kw = dict(reset_carry=r) if reset_carry else {}
            return rj.unroll(
                cell, p, x, impl=impl, initial_carry=c, resets=resets, seq_lengths=lengths,
                reverse=reverse, return_carries=True, **kw,
            )  # fmt: skip

        def loss(*args):
            return sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(f(*args)))

        args = (params, xs, carry0, restart)
        return jax.jit(f)(*args), jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)

    (values, grads), (want_values, want_grads) = outputs("cpu"), outputs("scan")
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **GRADS)
    text = jax.jit(lambda p: rj.unroll(cell, p, xs, resets=resets)[1]).lower(params).as_text()
    assert f"recurrent_jax_{name}_infer" in text  # auto takes the native path


# Big enough for the calls to spread over the cores (2 * T * B * (D + H) * G
# past the C++ threshold of 2e6 flops): 21 rows in slices of 16 and 5,
# H = 40 (gate columns off the 32-wide panels, weight rows off the 8-row
# blocks), weight gradients summed over several blocks of steps per slice.
# Sums over D + H = 45 and 12 steps: fp32 rounding of their size.
WIDE = dict(batch=21, steps=12, features=5, hidden=40)
WIDE_TOLERANCE = dict(atol=1e-4, rtol=1e-4)


def wide(name, rng, batch_shape):
    cell = getattr(rj.cells, name)(WIDE["hidden"])
    return cell, random_params(cell, rng, WIDE["features"])


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_row_slices_on_all_cores_equal_the_scan(name, rng):
    """Rows split over the worker pool, with padding, resets and per-step
    carries: every output and every gradient (params, inputs, both carries)."""
    batch = (WIDE["batch"],)
    cell, params = wide(name, rng, batch)
    xs = normal(rng, (*batch, WIDE["steps"], WIDE["features"]))
    carry0, restart = random_carry(cell, rng, batch), random_carry(cell, rng, batch)
    resets = rng.random((*batch, WIDE["steps"])) < 0.2
    lengths = rng.integers(0, WIDE["steps"] + 1, batch)

    def outputs(impl):
        def f(p, x, c, r):
            return rj.unroll(
                cell, p, x, impl=impl, initial_carry=c, resets=resets, reset_carry=r,
                seq_lengths=lengths, return_carries=True,
            )  # fmt: skip

        def loss(*args):
            return sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(f(*args)))

        args = (params, xs, carry0, restart)
        return jax.jit(f)(*args), jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)

    (values, grads), (want_values, want_grads) = outputs("cpu"), outputs("scan")
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **WIDE_TOLERANCE)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_vmapped_runs_on_all_cores_equal_the_scan(name, rng):
    """Three runs with their own weights, one run a core."""
    batch = (WIDE["batch"],)
    runs = [wide(name, rng, batch) for _ in range(3)]
    cell = runs[0][0]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[p for _, p in runs])
    xs = normal(rng, (*batch, WIDE["steps"], WIDE["features"]))

    def loss(p, x, impl):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, x, impl=impl)[1]))

    grad = jax.value_and_grad(lambda p, x: loss(p, x, "cpu"), argnums=(0, 1))
    got = jax.jit(jax.vmap(grad, (0, None)))(stacked, xs)
    for i, (_, params) in enumerate(runs):
        want = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, "scan"), argnums=(0, 1)))
        want = want(params, xs)
        assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], got), want, **WIDE_TOLERANCE)


def test_packed_rows_run_natively_and_equal_the_scan(rng):
    """rj.pack's rows (segment resets, per-sequence final carries) on impl="auto"."""
    seqs = [normal(rng, (n, D)) for n in (5, 1, 7, 3, 6)]
    packed = rj.pack(seqs, row_length=T)
    cell, params = make("lstm", rng)

    def loss(p, impl):
        carries, ys = rj.unroll(cell, p, packed, impl=impl)
        return jnp.sum(jnp.sin(ys.data)) + sum(
            jnp.sum(c) for c in jax.tree_util.tree_leaves(carries)
        )

    text = jax.jit(lambda p: loss(p, "auto")).lower(params).as_text()
    assert "recurrent_jax_lstm_infer" in text
    got = jax.jit(jax.value_and_grad(lambda p: loss(p, "auto")))(params)
    want = jax.jit(jax.value_and_grad(lambda p: loss(p, "scan")))(params)
    assert_trees_close(got, want, **GRADS)


def test_vmap_over_runs_with_their_own_weights(rng):
    cell, _ = make("lstm", rng)
    runs = [make("lstm", rng)[1] for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *runs)
    xs = normal(rng, (4, T, D))

    def loss(p, impl):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, xs, impl=impl)[1]))

    got = jax.jit(jax.vmap(jax.value_and_grad(lambda p: loss(p, "cpu"))))(stacked)
    for i, params in enumerate(runs):
        want = jax.jit(jax.value_and_grad(lambda p: loss(p, "scan")))(params)
        assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], got), want, **GRADS)


def test_auto_takes_it_for_plain_cells_only(rng):
    def lowered_text(cell, params, **kw):
        xs = normal(rng, (2, T, D))
        f = jax.jit(lambda p: rj.unroll(cell, p, xs, **kw)[1])
        return f.lower(params).as_text(debug_info=True)

    assert "recurrent_jax.cpu" in lowered_text(*make("lstm", rng))
    assert "recurrent_jax.cpu" in lowered_text(*make("gru", rng))
    assert "recurrent_jax.cpu" not in lowered_text(*make("lstm-all", rng))
    assert "recurrent_jax.cpu" not in lowered_text(*make("gru-before", rng))
    cell, params = make("lstm", rng)
    assert "recurrent_jax.cpu" not in lowered_text(cell, params, zoneout=0.1, deterministic=True)
    with pytest.raises(ValueError) as info:
        xs = normal(rng, (2, T, D))
        rj.unroll(*make("lstm-proj", rng), xs, impl="cpu", zoneout=0.1, deterministic=True)
    assert "not a plain fp32 LSTM" in str(info.value) and "`zoneout` is set" in str(info.value)


SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    import recurrent_jax as rj
    cell = rj.cells.lstm(4)
    params = cell.init(jax.random.PRNGKey(0), 3)
    xs = jnp.ones((2, 5, 3))
    text = jax.jit(lambda p: rj.unroll(cell, p, xs)[1]).lower(params).as_text(debug_info=True)
    print("fused" if "recurrent_jax.fused" in text else "other")
    try:
        rj.unroll(cell, params, xs, impl="cpu")
    except ValueError as error:
        print(error)
    """
)


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"RECURRENT_JAX_NO_CPU_EXTENSION": "1"}, "switched off"),
        ({"CXX": "/nonexistent/c++"}, "did not build"),
    ],
)
def test_without_the_extension_the_xla_paths_run(env, reason, tmp_path):
    environment = dict(os.environ, RECURRENT_JAX_CACHE=str(tmp_path), **env)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "fused"
    assert lines[1].startswith("impl: 'cpu' cannot be used here:") and reason in lines[1]


def test_nested_vmap_over_weights_and_inputs(rng):
    """Two vmap levels (runs x inputs): every operand carries both run axes."""
    cell, _ = make("gru", rng)
    runs = [make("gru", rng)[1] for _ in range(2)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *runs)
    xs = normal(rng, (3, 4, T, D))  # 3 input sets of 4 rows each
    lengths = jnp.asarray(rng.integers(0, T + 1, (3, 4)))

    def ys(p, x, n, impl):
        return rj.unroll(cell, p, x, seq_lengths=n, impl=impl)[1]

    run = jax.vmap(jax.vmap(lambda p, x, n: ys(p, x, n, "cpu"), (None, 0, 0)), (0, None, None))
    got = jax.jit(run)(stacked, xs, lengths)
    for i, params in enumerate(runs):
        for j in range(3):
            want = ys(params, xs[j], lengths[j], "scan")
            assert_trees_close(got[i, j], want, **VALUES)


def test_remat_segments_run_the_extension(rng):
    """``remat`` recomputes each segment's forward call in the backward: the
    gradients stay the scan's."""
    cell, params = make("lstm", rng)
    xs = normal(rng, (5, T, D))
    lengths = np.array([T, 0, 3, 1, 5])

    def loss(p, **kw):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, xs, seq_lengths=lengths, **kw)[1]))

    got = jax.jit(jax.grad(lambda p: loss(p, impl="cpu", remat=3)))(params)
    want = jax.jit(jax.grad(lambda p: loss(p, impl="scan")))(params)
    assert_trees_close(got, want, **GRADS)


def test_bf16_is_refused_with_the_reason_and_runs_on_xla(rng):
    cell = rj.cells.lstm(8, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), D)
    xs = normal(rng, (2, T, D)).astype(jnp.bfloat16)
    with pytest.raises(ValueError, match="its kernels compute in float32 only, got dtypes"):
        rj.unroll(cell, params, xs, impl="cpu")
    text = jax.jit(lambda p: rj.unroll(cell, p, xs)[1]).lower(params).as_text()
    assert "recurrent_jax_lstm" not in text  # auto takes an XLA backend
