"""Online learning (``rj.online``) against independent oracles.

- RTRL on every cell linear in its carry, one recurrent layer with a
  readout: the summed online gradient equals ``jax.grad`` of the BPTT loss
  over ``rj.unroll`` (the plain scan) in float64 to 1e-10, for a batch whose
  sequences have lengths T, T−2, 1 and 0 (padding) with resets inside them.
  float64 rounding over these few steps is ~1e-15; a dropped term of the
  gradient is O(0.1) or more.
- A hand-worked 3-step trace of a one-unit LRU, its numbers written here.
- Complex params: the gradient is JAX's, ∂L/∂Re z − i ∂L/∂Im z, checked
  against the real and imaginary parts differentiated as real params.
- SnAp-1: equals RTRL on a diagonal cell whose linearity is hidden; on an
  LSTM, GRU and Elman cell equals SnAp-1 computed by brute force (the full
  influence matrix by ``jax.jacfwd``, propagated as ``(I_t J + D_t) ⊙ M``
  with M the pattern of D_t, as Menick et al. define it).
- UORO: unbiased — over many noise draws the mean estimate is within 5
  standard errors of the BPTT gradient in every component.
- Memory: the compiled temp memory of an online pass over 10³ and 10⁵
  steps is equal; BPTT's grows with T.
"""

from __future__ import annotations

import functools
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import random_params
from jax.flatten_util import ravel_pytree

import recurrent_jax as rj
from recurrent_jax.cells import base
from recurrent_jax.online import _diagonal, _learner

F64 = jnp.float64
EXACT = dict(atol=1e-10, rtol=1e-10)  # float64 sums of a few steps: ~1e-15 (module doc)
B, T, D, H = 4, 6, 3, 4
LENGTHS = (T, T - 2, 1, 0)

LINEAR_CELLS = {
    "lru": lambda: rj.cells.lru(H, state_size=3, param_dtype=F64),
    "rglru": lambda: rj.cells.rglru(H, param_dtype=F64),
    "mingru": lambda: rj.cells.mingru(H, param_dtype=F64),
    "minlstm": lambda: rj.cells.minlstm(H, param_dtype=F64),
    "mingru-log": lambda: rj.cells.mingru(H, log_space=True, param_dtype=F64),
    "minlstm-log": lambda: rj.cells.minlstm(H, log_space=True, param_dtype=F64),
    "s4d": lambda: rj.cells.s4d(H, state_size=4, param_dtype=F64),
    "s4d-bilinear": lambda: rj.cells.s4d(
        H, state_size=4, discretization="bilinear", param_dtype=F64
    ),
    "s5": lambda: rj.cells.s5(H, state_size=4, blocks=2, param_dtype=F64),
    "s5-variable": lambda: rj.cells.s5(
        H, state_size=4, blocks=2, variable_steps=True, param_dtype=F64
    ),
    "s6": lambda: rj.cells.s6(H, state_size=3, param_dtype=F64),
    "s6-gate": lambda: rj.cells.s6(H, state_size=2, dt_rank=2, gate=True, param_dtype=F64),
    "linoss": lambda: rj.cells.linoss(H, state_size=2, param_dtype=F64),
    "d-linoss": lambda: rj.cells.linoss(H, state_size=2, damping=True, param_dtype=F64),
}
FAST = {"lru"}  # the complex form; the others (log, blocks, colourings) in the slow suite


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (conftest)


@functools.cache
def learner(method, name, input_size=D):
    """One learner per cell (finding its structure compiles)."""
    cell = (LINEAR_CELLS | DENSE_CELLS)[name]()
    if method == "snap1-hidden":  # the cell with its linearity hidden
        return rj.online.snap1(cell._replace(linear=None), input_size)
    return getattr(rj.online, method)(cell, input_size)


def exact_learner(cell, input_size, specialised):
    """RTRL with the cell's own rule (where it has one) or the generic traces."""
    cell = _learner.check_cell(cell)
    rule = _diagonal.exact_rule(cell, input_size, specialised=specialised)
    return _learner.learner(cell, rule, "rtrl")


def data(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), F64)


def squared_error(head, y, target):
    return 0.5 * jnp.sum((y @ head - target) ** 2)


def problem(rng, name, batch=B, steps=T):
    """Params, inputs, a readout head and targets."""
    cell = (LINEAR_CELLS | DENSE_CELLS)[name]()
    params = random_params(cell, rng)
    xs = data(rng, batch, steps, D)
    if name == "s5-variable":  # the last feature scales Δ: positive
        xs = xs.at[..., -1].set(0.5 + jnp.abs(xs[..., -1]))
    return cell, params, xs, data(rng, H, 2), data(rng, batch, steps, 2)


def bptt_gradient(cell, params, xs, head, targets, **options):
    """``jax.grad`` of Σ_t loss(y_t) with y from the plain scan."""

    def loss(params, head):
        _, ys = rj.unroll(cell, params, xs, impl="scan", **options)
        return sum(squared_error(head, ys[:, t], targets[:, t]) for t in range(xs.shape[1]))

    return jax.grad(loss, argnums=(0, 1))(params, head)


def assert_close(got, want, **tolerance):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tolerance)


# --- exact RTRL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in LINEAR_CELLS],
)
def test_rtrl_equals_bptt_with_padding_and_resets(rng, name):
    cell, params, xs, head, targets = problem(rng, name)
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True).at[1, 1].set(True).at[1, 5].set(True)
    options = dict(seq_lengths=jnp.array(LENGTHS), resets=resets)
    online = jax.jit(
        lambda p, h: rj.online.accumulate(
            learner("rtrl", name), p, xs, squared_error, h, targets, **options
        )[1]
    )(params, head)
    want = bptt_gradient(cell, params, xs, head, targets, **options)
    assert_close((online.grads, online.head_grads), want, **EXACT)


def test_each_step_gives_the_gradient_of_the_loss_so_far(rng):
    """``step`` in a Python loop, two batch axes: after t steps the summed
    gradients are BPTT's of the loss of the first t steps (per-step
    gradients by ``jax.jacrev`` of the T losses, summed)."""
    cell, params, xs, head, targets = problem(rng, "lru")

    def losses(params, head):
        _, ys = rj.unroll(cell, params, xs, impl="scan")
        return jnp.stack([squared_error(head, ys[:, t], targets[:, t]) for t in range(T)])

    per_step = jax.jacrev(losses, argnums=(0, 1))(params, head)
    so_far = jax.tree_util.tree_map(lambda g: jnp.cumsum(g, axis=0), per_step)
    rtrl = learner("rtrl", "lru")
    step = jax.jit(rtrl.step, static_argnums=3)
    split = lambda a: a.reshape(2, 2, *a.shape[1:])  # noqa: E731
    state, total = rtrl.init(params, (2, 2)), None
    for t in range(T):
        state, out = step(params, state, split(xs[:, t]), squared_error, head, split(targets[:, t]))
        grads = (out.grads, out.head_grads)
        total = grads if total is None else jax.tree_util.tree_map(jnp.add, total, grads)
        assert_close(total, jax.tree_util.tree_map(operator.itemgetter(t), so_far), **EXACT)


@pytest.mark.parametrize("specialised", [True, False], ids=["lru-rule", "generic"])
def test_hand_worked_one_unit_lru(specialised):
    """h_t = λ h_{t−1} + γ B x_t with λ = e^{−ν + iθ} = 0.5i (ν = ln 2,
    θ = π/2), γ = 1, B = 1, x = 1, 2, 3, y_t = Re h_t, loss Σ_t y_t.

    h: 1, 2 + 0.5i, 2.75 + i. ∂λ/∂ log θ = iθλ = −π/4 and
    ∂λ/∂ log ν = −νλ = −(ln 2/2) i, so with e_t = λ e_{t−1} + (∂λ) h_{t−1}:
    e_{log θ}: 0, −π/4, 0.5i(−π/4) − (π/4)(2 + 0.5i) = −π/2 − (π/4) i;
    e_{log ν}: 0, −(ln 2/2) i, ln 2/2 − (ln 2) i; e_B = e_{log γ} = h_t
    (so e_{Re B} = h_t, e_{Im B} = i h_t). The gradient sums Re e_t over the
    steps. The LRU's own rule keeps the complex traces; the generic one
    their [Re, Im] components, one per real column of B.
    """
    cell = rj.cells.lru(1, state_size=1, param_dtype=F64)
    params = {
        "nu_log": jnp.array([math.log(math.log(2.0))]),
        "theta_log": jnp.array([math.log(math.pi / 2)]),
        "gamma_log": jnp.array([0.0]),
        "w_ih": jnp.array([[1.0, 0.0]]),
        "w_out": jnp.array([[1.0], [0.0]]),
        "d": jnp.array([0.0]),
    }
    xs = jnp.array([[[1.0], [2.0], [3.0]]])
    rtrl = exact_learner(cell, 1, specialised)
    state, out = rj.online.accumulate(rtrl, params, xs, lambda head, y, target: jnp.sum(y))
    ln2, pi = math.log(2.0), math.pi
    np.testing.assert_allclose(out.y[0, :, 0], [1.0, 2.0, 2.75], atol=1e-14)
    expected = {
        "theta_log": -pi / 2 - pi / 4 * 1j,
        "nu_log": ln2 / 2 - ln2 * 1j,
        "gamma_log": 2.75 + 1j,
    }
    traces = state.traces
    if specialised:  # (B, N) complex; w_ih (B, N, D) complex
        for name, want in expected.items():
            np.testing.assert_allclose(traces[name][0, 0], want, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(traces["w_ih"][0, 0, 0], 2.75 + 1j, atol=1e-14)
    else:  # (B, C, W, *leaf): W = [Re, Im]
        for name, want in expected.items():
            got = traces[name][0, 0, :, 0]
            np.testing.assert_allclose(got, [want.real, want.imag], atol=1e-14, err_msg=name)
        np.testing.assert_allclose(
            traces["w_ih"][0, 0], [[[2.75, -1.0]], [[1.0, 2.75]]], atol=1e-14
        )
    assert traces["w_out"] is None and traces["d"] is None  # readouts: plain backprop
    grads = {
        "theta_log": [-0.75 * pi],
        "nu_log": [ln2 / 2],
        "gamma_log": [5.75],
        "w_ih": [[5.75, -1.5]],
        "w_out": [[5.75], [1.5]],
        "d": [6.0],
    }
    for name, want in grads.items():
        np.testing.assert_allclose(out.grads[name], want, atol=1e-14, err_msg=name)


def test_lru_rule_equals_the_generic_traces_at_every_step(rng):
    """The LRU's own rule (complex traces, one per entry of the complex B)
    against the generic traces found by ``_structure``: equal gradients at
    every step of a stream with padding and resets, and the same traces
    (e_{Re B} = e_B, e_{Im B} = i e_B as [Re, Im] components)."""
    cell, params, xs, head, targets = problem(rng, "lru")
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True).at[1, 1].set(True)
    valid = jnp.arange(T)[None] < jnp.array(LENGTHS)[:, None]
    runs = {}
    for specialised in (True, False):
        rtrl = exact_learner(cell, D, specialised)

        def body(state, t, rtrl=rtrl):
            state, out = rtrl.step(params, state, xs[:, t], squared_error, head, targets[:, t],
                                   valid=valid[:, t], reset=resets[:, t])  # fmt: skip
            return state, out.grads

        start = rtrl.init(params, (B,))
        runs[specialised] = jax.jit(lambda s, body=body: jax.lax.scan(body, s, jnp.arange(T)))(
            start
        )
    (fast_state, fast), (slow_state, slow) = runs[True], runs[False]
    assert jnp.iscomplexobj(fast_state.traces["w_ih"])  # the LRU's rule was chosen
    assert_close(fast, slow, **EXACT)
    e_b = fast_state.traces["w_ih"]  # (B, N, D) complex
    components = slow_state.traces["w_ih"][:, 0]  # (B, W, D, 2N)
    e_b = jnp.swapaxes(e_b, 1, 2)
    want = jnp.concatenate(
        [jnp.stack([e_b.real, e_b.imag], 1), jnp.stack([-e_b.imag, e_b.real], 1)], -1
    )
    np.testing.assert_allclose(components, want, **EXACT)
    for name in ("gamma_log", "nu_log", "theta_log"):
        e = fast_state.traces[name]
        np.testing.assert_allclose(slow_state.traces[name][:, 0], jnp.stack([e.real, e.imag], 1),
                                   **EXACT, err_msg=name)  # fmt: skip


def test_lru_rule_needs_the_lru_algebra(rng):
    """A cell with the LRU's params but another transition (here the
    input term doubled) keeps the generic traces, and is still exact."""
    lru = LINEAR_CELLS["lru"]()

    def update(params, carry, xp, h_in):
        xp = xp.at[..., : 2 * 3].multiply(2.0)
        return lru.update(params, carry, xp, h_in)

    def linear(params, xp):
        return lru.linear(params, xp.at[..., : 2 * 3].multiply(2.0))

    cell = lru._replace(update=update, linear=linear, step=lambda p, c, x: update(p, c, x, c))
    params = random_params(cell, rng)
    xs, head, targets = data(rng, B, T, D), data(rng, H, 2), data(rng, B, T, 2)
    rtrl = rj.online.rtrl(cell, D)
    state, out = jax.jit(
        lambda: rj.online.accumulate(rtrl, params, xs, squared_error, head, targets)
    )()
    assert not jnp.iscomplexobj(state.traces["w_ih"])  # the generic rule
    assert_close(
        (out.grads, out.head_grads), bptt_gradient(cell, params, xs, head, targets), **EXACT
    )


def complex_diagonal_cell(state_size, hidden_size):
    """A user cell with complex params: h = λ ⊙ h + x B, y = Re(h C)."""
    N = state_size

    def init(key, input_size):
        shapes = {"lam": (N,), "b": (input_size, N), "c": (N, hidden_size)}
        return {k: jnp.zeros(s, jnp.complex128) + 0.5j for k, s in shapes.items()}

    def linear(params, xp):
        b = xp.astype(jnp.complex128) @ params["b"]
        return jnp.broadcast_to(base.lift(params["lam"], b), b.shape), b

    def update(params, carry, xp, h_in):
        a, b = linear(params, xp)
        h = a * jax.lax.complex(carry[..., :N], carry[..., N:]) + b
        return jnp.concatenate([h.real, h.imag], -1), jnp.real(h @ params["c"])

    return rj.Cell(
        init=init,
        step=lambda p, c, x: update(p, c, x, c),
        update=update,
        initial_carry=base.zeros_carry(2 * N, F64),
        hidden_size=hidden_size,
        name="complex-diagonal",
        linear=linear,
    )


def test_complex_params_follow_jax_convention(rng):
    """The gradient of a complex param z is ∂L/∂Re z − i ∂L/∂Im z, the real
    and imaginary parts differentiated as two real params by BPTT."""
    cell = complex_diagonal_cell(2, H)
    shapes = {"lam": (2,), "b": (D, 2), "c": (2, H)}
    params = {k: jnp.asarray(0.4 * (data(rng, *s) + 1j * data(rng, *s))) for k, s in shapes.items()}
    xs, head, targets = data(rng, B, T, D), data(rng, H, 2), data(rng, B, T, 2)
    online = rj.online.accumulate(rj.online.rtrl(cell, D), params, xs, squared_error, head, targets)

    def loss(parts):
        return _bptt_loss(cell, jax.tree_util.tree_map(jax.lax.complex, *parts), xs, head, targets)

    real_parts = (
        jax.tree_util.tree_map(jnp.real, params),
        jax.tree_util.tree_map(jnp.imag, params),
    )
    d_re, d_im = jax.grad(loss)(real_parts)
    want = jax.tree_util.tree_map(lambda r, i: r - 1j * i, d_re, d_im)
    assert_close(online[1].grads, want, **EXACT)


def _bptt_loss(cell, params, xs, head, targets):
    _, ys = rj.unroll(cell, params, xs, impl="scan")
    return sum(squared_error(head, ys[:, t], targets[:, t]) for t in range(xs.shape[1]))


# --- SnAp-1 ----------------------------------------------------------------------------

DENSE_CELLS = {
    "lstm": lambda: rj.cells.lstm(H, param_dtype=F64),
    "lstm-peephole": lambda: rj.cells.lstm(H, peephole=True, param_dtype=F64),
    "lstm-heads": lambda: rj.cells.lstm(H, num_heads=2, param_dtype=F64),  # no pointwise
    "gru": lambda: rj.cells.gru(H, param_dtype=F64),
    "elman": lambda: rj.cells.elman(H, param_dtype=F64),
    "mgu": lambda: rj.cells.mgu(H, param_dtype=F64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rglru", "mingru"])
def test_snap1_equals_rtrl_on_a_diagonal_cell(rng, name):
    """A diagonal cell with ``linear`` hidden: SnAp-1 finds its Jacobian
    diagonal by ``jacfwd`` and must give RTRL's gradient."""
    _, params, xs, head, targets = problem(rng, name)
    run = lambda method: rj.online.accumulate(  # noqa: E731
        learner(method, name), params, xs, squared_error, head, targets, seq_lengths=LENGTHS
    )[1]
    assert_close(run("snap1-hidden").grads, run("rtrl").grads, atol=1e-13, rtol=1e-13)


def brute_force_snap1(cell, params, xs, head, targets):
    """SnAp-1 with whole matrices, one example: D_t = ∂F/∂θ and I_t = ∂F/∂h
    by ``jax.jacfwd`` on the flattened params and carry, M the pattern of
    D_t over the stream, J_t = (I_t J_{t−1} + D_t) ⊙ M, and the gradient
    Σ_t ∂L_t/∂θ + (∂L_t/∂h_{t−1}) J_{t−1}."""
    cell = base.with_defaults(cell)
    theta, as_params = ravel_pytree(params)
    h, as_carry = ravel_pytree(cell.initial_carry((), F64))

    def step(theta, h, x):
        p = as_params(theta)
        return cell.step(p, as_carry(h), cell.project(p, x[None])[0])

    def flat_step(theta, h, x):
        return ravel_pytree(step(theta, h, x)[0])[0]

    def loss(theta, h, x, target):
        return squared_error(head, step(theta, h, x)[1][None], target[None])

    carries = [h]
    for x in xs:
        carries.append(jax.jit(flat_step)(theta, carries[-1], x))
    jacobians = jax.jit(jax.jacfwd(flat_step, (0, 1)))
    d, i = zip(*(jacobians(theta, h, x) for h, x in zip(carries, xs, strict=False)), strict=True)
    pattern = np.any([np.asarray(m) != 0 for m in d], axis=0)
    influence, grad = np.zeros(pattern.shape), np.zeros(theta.shape)
    gradient = jax.jit(jax.grad(loss, (0, 1)))
    for t, x in enumerate(xs):
        direct, through_h = gradient(theta, carries[t], x, targets[t])
        grad = grad + direct + through_h @ influence
        influence = (i[t] @ influence + d[t]) * pattern
    return as_params(jnp.asarray(grad))


@pytest.mark.parametrize(
    "name",
    ["lstm"]
    + [
        pytest.param(n, marks=pytest.mark.slow)
        for n in ("gru", "elman", "lstm-peephole", "lstm-heads")
    ],
)
def test_snap1_equals_brute_force_snap1(rng, name):
    cell, params, xs, head, targets = problem(rng, name, batch=1, steps=5)
    online = rj.online.accumulate(learner("snap1", name), params, xs, squared_error, head, targets)
    want = brute_force_snap1(cell, params, xs[0], head, targets[0])
    assert_close(online[1].grads, want, atol=1e-12, rtol=1e-12)
    exact = bptt_gradient(cell, params, xs, head, targets)[0]
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(*map(jax.tree_util.tree_leaves, (want, exact)), strict=True)
    )
    assert gap > 1e-4, "SnAp-1 is biased on a dense cell: it cannot equal BPTT here"


# --- UORO ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["elman", pytest.param("lstm", marks=pytest.mark.slow)])
def test_uoro_is_unbiased(rng, name):
    """The mean of K independent UORO estimates of the stream's gradient is
    within 5 standard errors (σ̂/√K) of BPTT's in every component: a false
    alarm has probability < 1e-5 over all components, while a bias as
    small as 5% of a component's spread across draws fails."""
    cell, params, xs, head, targets = problem(rng, name, batch=1, steps=4)
    draws = 20_000
    uoro = rj.online.uoro(cell)
    estimate = jax.jit(
        jax.vmap(
            lambda k: (
                rj.online.accumulate(uoro, params, xs, squared_error, head, targets, key=k)[1].grads
            )
        )
    )(jax.random.split(jax.random.PRNGKey(0), draws))
    want = bptt_gradient(cell, params, xs, head, targets)[0]
    for got, exact in zip(*map(jax.tree_util.tree_leaves, (estimate, want)), strict=True):
        standard_error = np.asarray(got.std(axis=0)) / math.sqrt(draws)
        np.testing.assert_array_less(np.abs(got.mean(axis=0) - exact), 5 * standard_error + 1e-12)


# --- memory ------------------------------------------------------------------------------


def test_online_memory_does_not_grow_with_the_stream():
    """Compiled temp memory (XLA's buffer assignment) of an RTRL pass over
    10³ and 10⁵ time-major steps: equal. BPTT's grows ~100×."""
    jax.config.update("jax_enable_x64", False)
    cell = rj.cells.lru(8)
    rtrl = rj.online.rtrl(cell, D)
    params = jax.eval_shape(lambda k: cell.init(k, D), jax.random.PRNGKey(0))
    head = jax.ShapeDtypeStruct((8, 2), jnp.float32)

    def temp_bytes(fn, steps):
        xs = jax.ShapeDtypeStruct((steps, 2, D), jnp.float32)
        targets = jax.ShapeDtypeStruct((steps, 2, 2), jnp.float32)
        compiled = jax.jit(fn).lower(params, head, xs, targets).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def online(params, head, xs, targets):
        run = rj.online.accumulate(
            rtrl, params, xs, squared_error, head, targets, time_major=True, return_outputs=False
        )
        return run[1].grads

    def bptt(params, head, xs, targets):
        def loss(params):
            _, ys = rj.unroll(cell, params, xs, time_major=True, impl="scan")
            return squared_error(head, ys, targets)

        return jax.grad(loss)(params)

    assert temp_bytes(online, 10**3) == temp_bytes(online, 10**5)
    assert temp_bytes(bptt, 10**5) > 50 * temp_bytes(bptt, 10**3)


# --- errors -----------------------------------------------------------------------------


def test_errors_name_the_cell_and_what_to_use(rng):
    with pytest.raises(ValueError, match=r"cell: rtrl .* lstm has none.*snap1.*uoro"):
        rj.online.rtrl(rj.cells.lstm(2), 1)
    with pytest.raises(ValueError, match=r"cell: lru is linear in its carry.*equals exact RTRL"):
        rj.online.snap1(rj.cells.lru(2), 1)
    with pytest.raises(ValueError, match=r"snap1 needs every param to feed one unit.*mgu.*uoro"):
        learner("snap1", "mgu")
    with pytest.raises(ValueError, match=r"cell: online learning needs a cell without spatial"):
        rj.online.uoro(rj.cells.conv_lstm(2, 3, spatial_dims=1))
    with pytest.raises(ValueError, match=r"input_size: expected"):
        rj.online.rtrl(rj.cells.mingru(2), 0)
    with pytest.raises(TypeError, match=r"key: expected"):
        rj.online.uoro(rj.cells.elman(2)).init({}, (1,))
    with pytest.raises(ValueError, match=r"key: rtrl is deterministic"):
        learner("rtrl", "lru").init({}, (1,), jax.random.PRNGKey(0))
    rtrl, params = learner("rtrl", "lru"), random_params(LINEAR_CELLS["lru"](), rng)
    with pytest.raises(ValueError, match=r"params\['w_ih'\]: expected shape \(3, 6\)"):
        rtrl.init(dict(params, w_ih=jnp.zeros((5, 6))), (1,))
    with pytest.raises(ValueError, match=r"loss_fn: expected a scalar loss"):
        rtrl.step(params, rtrl.init(params, (2,)), data(rng, 2, D), lambda head, y, target: y)
    with pytest.raises(ValueError, match=r"reset: expected shape \(2,\)"):
        rtrl.step(params, rtrl.init(params, (2,)), data(rng, 2, D), squared_error, data(rng, H, 2),
                  reset=jnp.zeros((3,), bool))  # fmt: skip
