"""``impl="selective"``: s6 through Mamba's selective scan with a segmented
hand-written gradient (``recurrent_jax.selective``), against the plain scan
of its step (itself checked against ``selective_scan_ref`` in test_ssm.py)
and against the float64 NumPy loop of that reference over 1,000 steps:
outputs, final carries and gradients, with padding (prefix and arbitrary
masks, NaN in the padding), reverse, initial carries, several segments and a partial one,
bidirectional layers and vmapped runs; which calls ``impl="auto"`` gives
it, and why it refuses the others.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ssm_oracles
from _helpers import (
    assert_cases_agree,
    assert_trees_close,
    assert_vmapped_equals_each_run,
    auto_choice,
    normal,
    scaled_runs,
    scan_and,
)

import recurrent_jax as rj
from recurrent_jax import selective

B, T, H, D, N = 4, 37, 5, 3, 4
LENGTHS = np.array([0, T, 5, 1])  # empty, full, and two short rows
VARIANTS = [dict(gate=True), dict(gate=False, use_d=False), dict(dt_bias=False)]


def s6_setup(dtype, **options):
    """(cell, params, xs, carry0) in ``dtype``, A and D moved off their
    initial values so that no channel repeats another."""
    cell = rj.cells.s6(H, state_size=N, param_dtype=dtype, **options)
    params = cell.init(jax.random.PRNGKey(3), D)
    rng = np.random.default_rng(0)
    params = {
        k: (v + 0.2 * rng.standard_normal(v.shape) if k in ("a_log", "d") else v).astype(dtype)
        for k, v in params.items()
    }
    xs = jnp.asarray(rng.standard_normal((B, T, D)), dtype)
    carry0 = jnp.asarray(0.5 * rng.standard_normal((B, H * N)), dtype)
    return cell, params, xs, carry0


def cases(carry0):
    """Every engine option the selective scan runs, by name."""
    lengths = jnp.asarray(LENGTHS)
    holes = jnp.asarray(np.random.default_rng(1).random((B, T)) < 0.7)  # not a prefix
    return {
        "forward": {},
        "lengths": dict(seq_lengths=lengths),
        "mask": dict(mask=holes),
        "reverse": dict(reverse=True),
        "reverse-lengths": dict(reverse=True, seq_lengths=lengths),
        "carry": dict(initial_carry=carry0),
        "carry-mask": dict(initial_carry=carry0, mask=holes),
        "carry-reverse-lengths": dict(initial_carry=carry0, seq_lengths=lengths, reverse=True),
        "processing-order": dict(seq_lengths=lengths, reverse=True, keep_order=False),
    }


@pytest.fixture(params=[32, 8], ids=["one-segment-and-part", "five-segments"])
def segment(request, monkeypatch):
    """The default segment (T = 37: one whole segment and a partial one)
    and segments of 8 (several, the last partial)."""
    monkeypatch.setattr(selective, "SEGMENT", request.param)
    return request.param


@pytest.mark.parametrize("options", VARIANTS, ids=["gate", "no-gate-no-d", "no-dt-bias"])
def test_selective_equals_the_scan_in_float64(options, segment):
    """Outputs and final carries to 1e-10 of their scale, every padding,
    direction and initial-carry case, an empty and a full row among them."""
    with jax.enable_x64(True):
        cell, params, xs, carry0 = s6_setup(jnp.float64, **options)
        results = scan_and("selective", cell, params, xs, cases(carry0))
        assert_cases_agree(results, 1e-10)
        final, ys = results["carry-reverse-lengths"][1]
        assert ys.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(final)[0], carry0[0])  # length 0 keeps it
    np.testing.assert_array_equal(np.asarray(ys)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(ys)[2, 5:], 0.0)  # padded steps output zero


def test_selective_equals_the_scan_in_float32(segment):
    cell, params, xs, carry0 = s6_setup(jnp.float32)
    assert_cases_agree(scan_and("selective", cell, params, xs, cases(carry0)), 1e-5)


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-9)])
@pytest.mark.parametrize("case", ["carry-reverse-lengths", "carry-mask"])
@pytest.mark.parametrize("options", VARIANTS, ids=["gate", "no-gate-no-d", "no-dt-bias"])
def test_gradients_equal_the_scans(dtype, tol, case, options, segment):
    """jax.grad of a loss of the outputs and the final carry, with respect to
    the params, the inputs and the initial carry, through padded rows."""
    with jax.enable_x64(dtype == jnp.float64):
        cell, params, xs, carry0 = s6_setup(dtype, **options)
        probe = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, H)), dtype)

        def grads(impl):
            def loss(p, x, c):
                kw = {**cases(c)[case]}
                final, ys = rj.unroll(cell, p, x, impl=impl, **kw)
                return jnp.sum(jnp.sin(ys) * probe) + jnp.sum(final**2)

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, carry0)

        want, got = grads("scan"), grads("selective")
        scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(want))
        assert_trees_close(got, want, atol=tol * scale)


@pytest.mark.parametrize("gate", [True, False], ids=["gate-and-d", "bare"])
def test_selective_equals_the_oracle_loop_at_1000_steps(gate):
    """Against ``selective_scan_ref``'s float64 NumPy loop (``ssm_oracles``,
    independent of the package) over 1,000 steps from a nonzero state, with
    the cell's own Δ, B, C (and z, D with the gate and skip) fed to it:
    outputs and final state to 1e-10 of their scale."""
    with jax.enable_x64(True):
        options = dict(gate=gate, use_d=gate, input_proj=False, param_dtype=jnp.float64)
        cell = rj.cells.s6(H, state_size=N, **options)
        features = 2 * H if gate else H  # [u, z] or u
        params = cell.init(jax.random.PRNGKey(2), features)
        params["a_log"] = params["a_log"] + 0.1 * jnp.arange(H)[:, None]
        rng = np.random.default_rng(5)
        x = rng.standard_normal((1000, features))
        h0 = 0.5 * rng.standard_normal((H, N))
        run = jax.jit(lambda p, x, c: rj.unroll(cell, p, x, initial_carry=c, impl="selective"))
        got_h, got_y = run(params, jnp.asarray(x), jnp.asarray(h0.ravel()))
        xp = np.asarray(cell.project(params, jnp.asarray(x)))  # [u, Δ, B, C (, z)]
    u, delta, b, c = np.split(xp[:, : 2 * H + 2 * N], [H, 2 * H, 2 * H + N], axis=-1)
    p = {k: np.asarray(v) for k, v in params.items()}
    skip_and_gate = dict(D=p["d"], z=xp[:, 2 * H + 2 * N :].T[None]) if gate else {}
    want_y, want_h = ssm_oracles.selective_scan_ref(
        u.T[None], delta.T[None], -np.exp(p["a_log"]), b.T[None], c.T[None],
        h0=h0[None], **skip_and_gate,
    )  # fmt: skip
    scale = max(np.abs(want_y).max(), np.abs(want_h).max())
    np.testing.assert_allclose(np.asarray(got_y), want_y[0].T, atol=1e-10 * scale, rtol=0)
    np.testing.assert_allclose(np.asarray(got_h), want_h[0].ravel(), atol=1e-10 * scale, rtol=0)


def test_time_major_batch_axes_and_zero_steps():
    """Time-major inputs, no batch axis, two batch axes (gradients too), and
    an empty time axis."""
    cell, params, xs, carry0 = s6_setup(jnp.float32)
    two_axes = xs.reshape(2, 2, T, D)
    for kw, x in [(dict(time_major=True), jnp.swapaxes(xs, 0, 1)), ({}, xs[2]), ({}, two_axes)]:
        want = rj.unroll(cell, params, x, impl="scan", **kw)
        assert_trees_close(rj.unroll(cell, params, x, impl="selective", **kw), want, atol=1e-5)

    def grads(impl):
        loss = lambda p: jnp.sum(jnp.sin(rj.unroll(cell, p, two_axes, impl=impl)[1]))  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    assert_trees_close(grads("selective"), grads("scan"), atol=1e-4)
    final, ys = rj.unroll(cell, params, xs[:, :0], initial_carry=carry0, impl="selective")
    assert ys.shape == (B, 0, H)
    np.testing.assert_array_equal(final, carry0)


def test_what_the_padding_holds_is_never_read():
    """NaN in the padded steps' inputs, forward and reversed: the outputs
    and final carries equal the scan's, all finite (a padded step is an
    identity step whatever its inputs)."""
    cell, params, xs, carry0 = s6_setup(jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    padded = jnp.where(jnp.arange(T)[None, :, None] < lengths[:, None, None], xs, jnp.nan)
    for reverse in (False, True):
        kw = dict(seq_lengths=lengths, reverse=reverse, initial_carry=carry0)
        want = rj.unroll(cell, params, padded, impl="scan", **kw)
        got = rj.unroll(cell, params, padded, impl="selective", **kw)
        assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(got))
        assert_trees_close(got, want, atol=1e-5)


def test_forward_mode_autodiff_needs_the_scan():
    """A custom VJP has no forward mode: ``jax.jvp`` through it is JAX's
    error, and through ``impl="scan"`` it runs (and equals the VJP's
    directional derivative)."""
    cell, params, xs, _ = s6_setup(jnp.float32)
    direction = jnp.ones_like(xs)

    def outputs(impl):
        return lambda x: rj.unroll(cell, params, x, impl=impl)[1]

    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(outputs("selective"), (xs,), (direction,))
    _, tangent = jax.jvp(outputs("scan"), (xs,), (direction,))
    probe = jnp.cos(jnp.arange(tangent.size, dtype=jnp.float32)).reshape(tangent.shape)
    _, pullback = jax.vjp(outputs("selective"), xs)
    np.testing.assert_allclose(
        float(jnp.vdot(probe, tangent)), float(jnp.vdot(pullback(probe)[0], direction)), rtol=1e-4
    )


def test_bidirectional_layer_and_the_mamba_block():
    cell, params, xs, _ = s6_setup(jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    layer = {impl: rj.bidirectional(cell, impl=impl) for impl in ("scan", "selective", "auto")}
    p = layer["scan"].init(jax.random.PRNGKey(0), D)
    want = layer["scan"].apply(p, xs, seq_lengths=lengths)
    for impl in ("selective", "auto"):
        assert_trees_close(layer[impl].apply(p, xs, seq_lengths=lengths), want, atol=1e-5)
    block = {impl: rj.mamba_block(8, state_size=N, impl=impl) for impl in ("scan", "auto")}
    p = block["scan"].init(jax.random.PRNGKey(1), D)
    want = block["scan"].apply(p, xs, seq_lengths=lengths)
    assert_trees_close(block["auto"].apply(p, xs, seq_lengths=lengths), want, atol=1e-5)


def test_vmapped_runs_equal_each_run(rng, segment):
    """A sweep's run axis over params, inputs and lengths: run i of the
    vmapped selective scan is the scan of run i, gradients included."""
    cell, params, xs, _ = s6_setup(jnp.float32)
    runs = 3
    stacked = scaled_runs(params, runs)
    xs_runs = normal(rng, (runs, B, T, D))
    lengths = jnp.asarray(np.stack([LENGTHS, LENGTHS[::-1], np.full(B, 7)]))

    def run(impl):
        def loss(p, x, n):
            return jnp.sum(jnp.sin(rj.unroll(cell, p, x, seq_lengths=n, impl=impl)[1]))

        return jax.value_and_grad(loss)

    args = (stacked, xs_runs, lengths)
    assert_vmapped_equals_each_run(run("selective"), run("scan"), args, 1e-4)


# --- the choice of "auto", and the refusals ----------------------------------------------


def chosen(cell, steps=T, **uses):
    return auto_choice(cell, (steps, B, D), **uses)


PER_STEP = ["resets", "return_carries", "recurrent_dropout", "zoneout", "remat", "no_hoist"]


def test_auto_picks_the_selective_scan_unless_a_per_step_option_is_on():
    if jax.default_backend() != "cpu":
        pytest.skip("on accelerators the parallel scans or the TPU kernel may come first")
    s6 = rj.cells.s6(H, state_size=N)
    assert chosen(s6) == "selective" and chosen(s6, steps=16384) == "selective"
    for runs_whole in ("mask", "reverse", "initial_carry"):
        assert chosen(s6, **{runs_whole: True}) == "selective"
    for option in PER_STEP:
        assert chosen(s6, **{option: True}) == "scan", option
    for other in (rj.cells.s5(H, state_size=4, blocks=1), rj.cells.lru(H), rj.cells.lstm(H)):
        assert chosen(other) != "selective"


def test_auto_takes_it_on_cpu_hosts_only():
    """Measured on CPUs only: traced as on a GPU host, ``auto`` runs the
    scan (T below the associative crossover) and never this backend."""
    from unittest import mock

    s6 = rj.cells.s6(H, state_size=N)
    with mock.patch.object(jax, "default_backend", lambda: "gpu"):
        assert chosen(s6) == "scan"
    with mock.patch.object(jax, "default_backend", lambda: "cpu"):
        assert chosen(s6) == "selective"


def test_auto_runs_it_in_unroll():
    cell, params, xs, _ = s6_setup(jnp.float32)
    fn = jax.jit(lambda p, x: rj.unroll(cell, p, x, seq_lengths=jnp.asarray(LENGTHS))[1])
    assert "recurrent_jax.selective" in fn.lower(params, xs).as_text(debug_info=True)


def test_refusals_name_each_reason(fast_key):
    cell, params, xs, _ = s6_setup(jnp.float32)
    mask = jnp.ones((B, T), bool)
    with pytest.raises(ValueError) as info:
        rj.unroll(
            cell, params, xs, impl="selective", resets=mask, return_carries=True,
            zoneout=0.1, recurrent_dropout=0.1, key=fast_key, remat=4, hoist=False,
        )  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and message.startswith("impl: 'selective' cannot be used here: ")
    for reason in (
        "`resets` is set: a restart inside a row is not a step of the selective scan",
        "`return_carries` is set: the selective scan keeps no per-step carries",
        "`recurrent_dropout` is set",
        "`zoneout` is set",
        "`remat` is set",
        "`hoist=False`",
    ):
        assert reason in message
    lstm = rj.cells.lstm(H)
    with pytest.raises(ValueError, match=r"it needs a selective state-space cell .* lstm cell"):
        rj.unroll(lstm, lstm.init(jax.random.PRNGKey(0), D), xs, impl="selective")
