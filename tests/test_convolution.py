"""``impl="fft"``: S4D run as a causal convolution (``recurrent_jax.convolution``)
against the plain scan of its step, which is the reference (its own float64
oracles are in test_ssm.py): outputs, final carries and gradients, with
padding, reverse, initial carries, bidirectional layers and vmapped runs;
which calls ``impl="auto"`` gives it, and why it refuses the others.
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

B, T, H, D, N = 4, 37, 4, 3, 6
LENGTHS = np.array([0, T, 5, 1])  # empty, full, and two short rows
VARIANTS = [(d, i) for d in ("zoh", "bilinear") for i in ("lin", "inv")]


def s4d_setup(discretization, init, dtype, input_size=D):
    """(cell, params, xs, carry0) in ``dtype``: the cell's own initialisation
    (Lin or Inv), with B, C and D moved off their symmetric values."""
    cell = rj.cells.s4d(
        H, state_size=N, init=init, discretization=discretization, param_dtype=dtype
    )
    params = cell.init(jax.random.PRNGKey(3), input_size)
    rng = np.random.default_rng(0)
    params = {
        k: (v + 0.3 * rng.standard_normal(v.shape) if k in ("b", "c", "d") else v).astype(dtype)
        for k, v in params.items()
    }
    xs = jnp.asarray(rng.standard_normal((B, T, input_size)), dtype)
    carry0 = jnp.asarray(0.5 * rng.standard_normal((B, H * N)), dtype)
    return cell, params, xs, carry0


def cases(carry0):
    """Every engine option the convolution runs, by name."""
    lengths = jnp.asarray(LENGTHS)
    return {
        "forward": {},
        "lengths": dict(seq_lengths=lengths),
        "reverse": dict(reverse=True),
        "reverse-lengths": dict(reverse=True, seq_lengths=lengths),
        "carry": dict(initial_carry=carry0),
        "carry-lengths": dict(initial_carry=carry0, seq_lengths=lengths),
        "carry-reverse-lengths": dict(initial_carry=carry0, seq_lengths=lengths, reverse=True),
        "processing-order": dict(seq_lengths=lengths, reverse=True, keep_order=False),
    }


@pytest.mark.parametrize("discretization, init", VARIANTS)
def test_fft_equals_the_scan_in_float64(discretization, init):
    """Outputs and final carries to 1e-10 of their scale, every padding,
    direction and initial-carry case, an empty and a full row among them."""
    with jax.enable_x64(True):
        cell, params, xs, carry0 = s4d_setup(discretization, init, jnp.float64)
        results = scan_and("fft", cell, params, xs, cases(carry0))
        assert_cases_agree(results, 1e-10)
        final, ys = results["carry-lengths"][1]
        assert ys.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(final)[0], carry0[0])  # length 0 keeps it
    np.testing.assert_array_equal(np.asarray(ys)[0], 0.0)
    np.testing.assert_array_equal(np.asarray(ys)[2, 5:], 0.0)  # padded steps output zero


@pytest.mark.parametrize("discretization, init", VARIANTS)
def test_fft_equals_the_scan_in_float32(discretization, init):
    cell, params, xs, carry0 = s4d_setup(discretization, init, jnp.float32)
    assert_cases_agree(scan_and("fft", cell, params, xs, cases(carry0)), 1e-5)


@pytest.mark.parametrize("rows", [1, 3])
def test_batch_rows_in_groups(rows, monkeypatch):
    """The FFTs take the batch rows in groups (``lax.map``), here of 1 and of
    3 rows (4 = 3 + a remainder of 1), as long inputs do: the same results,
    gradients included."""
    from recurrent_jax import convolution

    size = 128  # the FFT length for T = 37
    monkeypatch.setattr(convolution, "_FFT_GROUP", rows * H * size)
    cell, params, xs, carry0 = s4d_setup("zoh", "inv", jnp.float32)
    assert_cases_agree(scan_and("fft", cell, params, xs, cases(carry0)), 1e-5)

    def grads(impl):
        loss = lambda p, x: jnp.sum(jnp.sin(rj.unroll(cell, p, x, impl=impl)[1]))  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)

    want = grads("scan")
    scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(want))
    assert_trees_close(grads("fft"), want, atol=1e-4 * scale)


def test_groups_only_on_cpu_hosts(monkeypatch):
    """The grouping loop is for CPU caches: traced as on a GPU host, the
    rows go through one FFT call (no loop in the program)."""
    from unittest import mock

    from recurrent_jax import convolution

    monkeypatch.setattr(convolution, "_FFT_GROUP", 128 * H)  # one row per group
    cell, params, xs, _ = s4d_setup("zoh", "lin", jnp.float32)

    def text(platform):
        with mock.patch.object(jax, "default_backend", lambda: platform):
            fn = jax.jit(lambda p, x: rj.unroll(cell, p, x, impl="fft")[1])
            return fn.lower(params, xs).as_text()

    assert "stablehlo.while" in text("cpu")
    assert "stablehlo.while" not in text("gpu")


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_fft_equals_the_oracle_loop_at_1000_steps(method):
    """Against the float64 NumPy loop of S4D's recurrence (``ssm_oracles``,
    independent of the package) over 1,000 steps from a nonzero state:
    outputs and final state to 1e-10 of their scale in float64, 1e-4 in
    float32 (rounding of Ā^l over 1,000 steps, as the scan's)."""
    cell32 = rj.cells.s4d(H, state_size=N, init="inv", discretization=method)
    params = {
        k: np.asarray(v, np.float64) for k, v in cell32.init(jax.random.PRNGKey(2), H).items()
    }
    params["c"] = params["c"] + 0.1  # nothing cancels by symmetry
    rng = np.random.default_rng(5)
    u = rng.standard_normal((1000, H))
    h0 = 0.5 * (rng.standard_normal((H, N // 2)) + 1j * rng.standard_normal((H, N // 2)))
    complex_of = lambda planes: planes[:, : N // 2] + 1j * planes[:, N // 2 :]  # noqa: E731
    want_y, want_h = ssm_oracles.s4d_recurrent(
        u,
        params["log_dt"],
        -np.exp(params["log_a_real"]) + 1j * params["a_imag"],
        complex_of(params["b"]),
        complex_of(params["c"]),
        params["d"],
        method,
        h0,
    )
    carry0 = np.concatenate([h0.real.ravel(), h0.imag.ravel()])
    want = (np.concatenate([want_h.real.ravel(), want_h.imag.ravel()]), want_y)
    scale = max(np.abs(want_y).max(), np.abs(want_h).max())
    with jax.enable_x64(True):
        cell = rj.cells.s4d(
            H, state_size=N, init="inv", discretization=method, param_dtype=jnp.float64
        )
        run = jax.jit(lambda p, x, c: rj.unroll(cell, p, x, initial_carry=c, impl="fft"))
        got = run(*jax.tree_util.tree_map(jnp.asarray, (params, u, carry0)))
        assert_trees_close(got, want, atol=1e-10 * scale)
    to32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    run = jax.jit(lambda p, x, c: rj.unroll(cell32, p, x, initial_carry=c, impl="fft"))
    got32 = run(jax.tree_util.tree_map(to32, params), to32(u), to32(carry0))
    assert_trees_close(got32, want, atol=1e-4 * scale)


def test_time_major_and_no_batch_axes(rng):
    cell, params, xs, carry0 = s4d_setup("zoh", "lin", jnp.float32)
    for kw, x in [(dict(time_major=True), jnp.swapaxes(xs, 0, 1)), ({}, xs[2])]:
        want = rj.unroll(cell, params, x, impl="scan", **kw)
        assert_trees_close(rj.unroll(cell, params, x, impl="fft", **kw), want, atol=1e-5)


def test_an_input_of_h_features_and_zero_steps():
    """No input map (D = H) and an empty time axis."""
    cell, params, xs, carry0 = s4d_setup("bilinear", "inv", jnp.float32, input_size=H)
    assert "w_ih" not in params
    assert_cases_agree(scan_and("fft", cell, params, xs, cases(carry0)), 1e-5)
    final, ys = rj.unroll(cell, params, xs[:, :0], initial_carry=carry0, impl="fft")
    assert ys.shape == (B, 0, H)
    np.testing.assert_array_equal(final, carry0)


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-4), (jnp.float64, 1e-9)])
def test_gradients_equal_the_scans(dtype, tol):
    """jax.grad of a loss of the outputs and the final carry, with respect to
    the params, the inputs and the initial carry, through reversed padded rows."""
    with jax.enable_x64(dtype == jnp.float64):
        cell, params, xs, carry0 = s4d_setup("zoh", "inv", dtype)
        probe = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, H)), dtype)

        def grads(impl):
            def loss(p, x, c):
                kw = dict(initial_carry=c, seq_lengths=jnp.asarray(LENGTHS), reverse=True)
                final, ys = rj.unroll(cell, p, x, impl=impl, **kw)
                return jnp.sum(jnp.sin(ys) * probe) + jnp.sum(final**2)

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, carry0)

        want, got = grads("scan"), grads("fft")
        scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(want))
        assert_trees_close(got, want, atol=tol * scale)


def test_bidirectional_layer(rng):
    cell, params, xs, _ = s4d_setup("zoh", "lin", jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    layer = {impl: rj.bidirectional(cell, impl=impl) for impl in ("scan", "fft", "auto")}
    p = layer["scan"].init(jax.random.PRNGKey(0), D)
    want = layer["scan"].apply(p, xs, seq_lengths=lengths)
    for impl in ("fft", "auto"):
        assert_trees_close(layer[impl].apply(p, xs, seq_lengths=lengths), want, atol=1e-5)


def test_vmapped_runs_equal_each_run(rng):
    """A sweep's run axis over params, inputs and lengths: run i of the
    vmapped convolution is the scan of run i."""
    cell, params, xs, _ = s4d_setup("bilinear", "lin", jnp.float32)
    runs = 3
    stacked = scaled_runs(params, runs)
    xs_runs = normal(rng, (runs, B, T, D))
    lengths = jnp.asarray(np.stack([LENGTHS, LENGTHS[::-1], np.full(B, 7)]))

    def run(impl):
        return lambda p, x, n: rj.unroll(cell, p, x, seq_lengths=n, reverse=True, impl=impl)

    assert_vmapped_equals_each_run(run("fft"), run("scan"), (stacked, xs_runs, lengths), 1e-5)


# --- the choice of "auto", and the refusals ----------------------------------------------


def chosen(cell, **uses):
    return auto_choice(cell, (T, B, D), **uses)


PER_STEP = ["mask", "resets", "return_carries", "recurrent_dropout", "zoneout", "remat", "no_hoist"]


def test_auto_picks_the_convolution_unless_a_per_step_option_is_on():
    s4d = rj.cells.s4d(H, state_size=N)
    if jax.default_backend() == "tpu":
        pytest.skip("on TPUs the Pallas TPU kernel comes first in the table")
    assert chosen(s4d) == "fft"
    for runs_whole in ("reverse", "initial_carry"):
        assert chosen(s4d, **{runs_whole: True}) == "fft"
    for option in PER_STEP:
        assert chosen(s4d, **{option: True}) != "fft", option
    for other in (rj.cells.s5(H, state_size=4, blocks=1), rj.cells.lru(H), rj.cells.lstm(H)):
        assert chosen(other) != "fft"


def test_auto_runs_it_in_unroll_and_the_scan_with_a_mask():
    cell, params, xs, _ = s4d_setup("zoh", "lin", jnp.float32)
    mask = jnp.asarray(np.arange(T)[None] < LENGTHS[:, None])

    def text(**kw):
        fn = jax.jit(lambda p, x: rj.unroll(cell, p, x, **kw)[1])
        return fn.lower(params, xs).as_text(debug_info=True)

    assert "recurrent_jax.fft" in text(seq_lengths=jnp.asarray(LENGTHS), reverse=True)
    masked = text(mask=mask)
    assert "recurrent_jax.scan" in masked and "recurrent_jax.fft" not in masked


def test_refusals_name_each_reason(rng, fast_key):
    cell, params, xs, _ = s4d_setup("zoh", "lin", jnp.float32)
    mask = jnp.ones((B, T), bool)
    with pytest.raises(ValueError) as info:
        rj.unroll(
            cell, params, xs, impl="fft", mask=mask, resets=mask, return_carries=True,
            zoneout=0.1, recurrent_dropout=0.1, key=fast_key, remat=4, hoist=False,
        )  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and message.startswith("impl: 'fft' cannot be used here: ")
    for reason in (
        "`mask` is set: a convolution needs each row's valid steps as one prefix "
        "(give `seq_lengths`)",
        "`resets` is set: a restart inside a row breaks the convolution",
        "`return_carries` is set: a convolution forms no per-step carries",
        "`recurrent_dropout` is set",
        "`zoneout` is set",
        "`remat` is set",
        "`hoist=False`",
    ):
        assert reason in message
    lstm = rj.cells.lstm(H)
    with pytest.raises(ValueError, match=r"it needs a time-invariant cell .* the lstm cell is not"):
        rj.unroll(lstm, lstm.init(jax.random.PRNGKey(0), D), xs, impl="fft")
    packed = rj.pack([np.ones((3, D), np.float32), np.ones((2, D), np.float32)], row_length=5)
    with pytest.raises(ValueError, match="`resets` is set"):
        rj.unroll(cell, params, packed, impl="fft")
