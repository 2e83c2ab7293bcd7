r"""Diagonal traces: exact RTRL for element-wise recurrences, SnAp-1 otherwise.

Write one step as ``h_t = F(θ, h_{t−1}, x_t)`` and its influence matrix
``J_t = dh_t/dθ``. Real-time recurrent learning carries

.. math::  J_t = I_t J_{t−1} + D_t,\qquad I_t = ∂F/∂h_{t−1},\quad D_t = ∂F/∂θ,

an (S × P) matrix: O(S·P) memory and O(S²·P) time per step, impractical
for a dense W_hh. When the recurrence is element-wise in the carry —
``h_t = a_t ⊙ h_{t−1} + b_t`` with a_t, b_t functions of θ and x_t alone
(``Cell.linear``: LRU, RG-LRU, minGRU, minLSTM, S4D, S5, S6, LinOSS) —
I_t is diagonal (2×2 blocks for complex and oscillator units) and J_t keeps
the sparsity of D_t: entry i of θ only ever influences the units it feeds
directly. Each (unit, entry) pair then carries its own scalar trace

.. math::  e_t = A_t\, e_{t−1} + \frac{∂F_u}{∂θ_i},

A_t the unit's block of I_t (``a_t`` itself: for h = λ ⊙ h + B x,
e_λ ← λ ⊙ e_λ + h_{t−1} and e_B ← λ ⊙ e_B + x_tᵀ), which is RTRL *exactly*
at the cost of a few forward passes per step (Zucchet et al. 2023, "Online
learning of long-range dependencies", NeurIPS). The entries and units are
paired by ``_structure``; ∂F_u/∂θ_i comes from one VJP per colour and unit
component.

SnAp-1 (Menick et al. 2021, "Practical real time recurrent learning with a
sparse approximation", ICLR) runs the same traces on a dense cell: it keeps
the entries of J that D_t fills in one step and propagates them with the
diagonal blocks of I_t only, dropping the influence a param has on its
unit through the other units. Biased (exact when I_t is block-diagonal);
memory and time of RTRL for a diagonal cell. The blocks come from the
cell's ``pointwise`` (the recurrent GEMM's own weight ``W_hh[j, j]`` per gate)
or, for other cells, from the Jacobian ``∂F/∂h`` (S forward passes).

Complex params follow JAX's convention: the trace of a complex entry z is
``∂h/∂Re z − i ∂h/∂Im z`` (what ``jax.vjp`` gives), so the gradient is
``jax.grad``'s, ``∂L/∂Re z − i ∂L/∂Im z``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks, parallel
from recurrent_jax.cells.base import Cell, carry_dtype_of, recurrent_product
from recurrent_jax.online import _learner, _lru, _structure
from recurrent_jax.online._structure import from_planes, to_planes, transition

APPROXIMATIONS = (
    "rj.online.snap1 (biased: drops the influence through other units) "
    "or rj.online.uoro (unbiased, noisy)"
)


def rtrl(cell: Cell, input_size: int) -> _learner.OnlineLearner:
    r"""Exact real-time recurrent learning for a cell linear in its carry.

    The traces hold, for every (param entry, state unit) pair the entry
    feeds, ``∂h_u/∂θ_i`` (module doc); the gradient at every step equals
    backpropagation through the whole stream so far (the oracle test checks
    it against ``jax.grad`` in float64 to 1e-10).

    Args:
      cell: a cell with ``Cell.linear`` (LRU, RG-LRU, minGRU, minLSTM,
        S4D, S5, S6, LinOSS, or your own).
      input_size: D, the features of x_t (the params' shapes depend on it).

    Returns:
      An ``OnlineLearner``; ``OnlineState.traces`` is a tree like the params
      with, per leaf that feeds the state, an array (B..., C, W, *leaf)
      (C colour slots, W unit components; module doc of ``_structure``),
      and None for leaves that only read the state (readouts). For the
      LRU (``rj.cells.lru``, recognised by its params and checked against its
      equation) the rule written from its algebra runs instead, with complex
      traces (B..., N) per per-unit param and (B..., N, D) for ``w_ih``, the
      complex B (``_lru``): half the memory and ~4x faster.
    """
    cell = _learner.check_cell(cell)
    if cell.linear is None:
        raise ValueError(
            f"cell: rtrl needs a cell linear in its carry (element-wise recurrence, "
            f"Cell.linear); {cell.name} has none, so no exact rule: use {APPROXIMATIONS}"
        )
    return _learner.learner(cell, exact_rule(cell, input_size), "rtrl")


def exact_rule(cell: Cell, input_size: int, specialised: bool = True) -> _learner.Rule:
    """RTRL's rule for a cell with ``Cell.linear``: the one written from the
    cell's algebra where there is one (``_lru``), else the traces found by
    ``_structure``."""
    input_size = _checks.check_positive_int("input_size", input_size)
    rule = _lru.rule(cell, input_size) if specialised else None
    if rule is not None:
        return rule
    structure = _structure.find(cell, input_size)
    return _rule(cell, structure, _linear_blocks, masked=False)


def snap1(cell: Cell, input_size: int) -> _learner.OnlineLearner:
    r"""SnAp-1: the diagonal traces of ``rtrl`` on a cell with a dense W_hh.

    Biased: it propagates each trace with the unit's own block of
    ``∂h_t/∂h_{t−1}`` and drops the influence of a param on its unit through
    the other units (module doc). Cost: memory B·|θ|·W, time a few
    forward passes per step (with ``Cell.pointwise``: Elman, LSTM, GRU
    with the reset after; other cells take the Jacobian, S passes).

    Args:
      cell: a cell without ``Cell.linear`` (for one with it SnAp-1 *is* exact
        RTRL: use ``rtrl``) whose params each feed one unit per step (no
        layer norm, no projection).
      input_size: D.

    Returns:
      An ``OnlineLearner`` with traces as ``rtrl``'s.
    """
    cell = _learner.check_cell(cell)
    if cell.linear is not None:
        raise ValueError(
            f"cell: {cell.name} is linear in its carry, where SnAp-1 equals exact RTRL; "
            "use rj.online.rtrl(cell, input_size)"
        )
    structure = _structure.find(cell, _checks.check_positive_int("input_size", input_size))
    for path, feeds in zip(structure.paths, structure.feeds, strict=True):
        if feeds is not None and feeds.units.shape[0] > 1:
            raise ValueError(
                f"cell: snap1 needs every param to feed one unit per step, but params{path} "
                f"of {cell.name} feeds {feeds.units.shape[0]} within a step (a gate before "
                "the recurrent product, layer norm or a projection); use rj.online.uoro"
            )
    blocks = _pointwise_blocks if _has_pointwise(cell, structure) else _jacobian_blocks
    return _learner.learner(cell, _rule(cell, structure, blocks, masked=True), "snap1")


# --- the rule ---------------------------------------------------------------------


def _rule(cell, structure, blocks, masked) -> _learner.Rule:
    """The traces of ``structure`` propagated by ``blocks(cell, units,
    params, carry, x) -> (W, W, U)``, one example's diagonal blocks; with
    ``masked``, only the components each entry feeds directly are kept
    (SnAp-1's pattern: an LSTM's output gate feeds h_j but not c_j)."""
    units, feeds = structure.units, structure.feeds
    groups = _groups(feeds)

    def local(params, carry, x):
        return _local_derivatives(cell, units, groups, params, carry, x)

    def init(params, examples, key):
        _checks.check_params(cell, params, structure.input_size)
        carry = cell.initial_carry((), carry_dtype_of(cell, params))
        x = jnp.zeros(structure.input_size, jax.tree_util.tree_leaves(carry)[0].dtype)
        shapes = jax.eval_shape(local, params, carry, x)
        traces = [None if s is None else jnp.zeros((examples, *s.shape), s.dtype) for s in shapes]
        return jax.tree_util.tree_unflatten(structure.treedef, traces)

    def gradient(params, traces, delta):
        delta = _pad(jax.vmap(lambda d: to_planes(units, d))(delta))
        return [
            None if f is None else _contract(t, delta, f.units)
            for t, f in zip(_leaves(traces), feeds, strict=True)
        ]

    def advance(params, traces, carry, x, key):
        def one(carry, x):
            return local(params, carry, x), blocks(cell, units, params, carry, x)

        derivatives, a = jax.vmap(one)(carry, x)
        a = _pad(a)
        new = [
            None if f is None else _propagate(t, d, a, f.units, f.components if masked else None)
            for t, d, f in zip(_leaves(traces), derivatives, feeds, strict=True)
        ]
        return jax.tree_util.tree_unflatten(structure.treedef, new)

    return _learner.Rule(init, gradient, advance)


def _leaves(traces):
    return jax.tree_util.tree_leaves(traces, is_leaf=lambda t: t is None)


def _groups(feeds):
    """[(colours (U,), leaf indices)]: leaves whose units share a colouring
    share their VJPs."""
    groups = {}
    for index, f in enumerate(feeds):
        if f is not None:
            groups.setdefault(f.colours.tobytes(), (f.colours, []))[1].append(index)
    return list(groups.values())


def _local_derivatives(cell, units, groups, params, carry, x):
    """Per leaf (C, W, *leaf): ``∂F_u/∂θ_i`` for the unit of each colour slot
    and component (one VJP per colour and component), or None."""

    def planes(p):
        return to_planes(units, transition(cell, p, carry, x))

    out, vjp = jax.vjp(planes, params)
    components = jnp.eye(units.width, dtype=out.dtype)
    result = [None] * len(jax.tree_util.tree_leaves(params))
    for colours, indices in groups:
        in_colour = np.arange(colours.max() + 1)[:, None] == colours[None, :]  # (C, U)
        cotangents = components[None, :, :, None] * jnp.asarray(in_colour, out.dtype)[:, None, None]
        (grads,) = jax.vmap(jax.vmap(vjp))(cotangents)
        leaves = jax.tree_util.tree_leaves(grads)
        for index in indices:
            result[index] = leaves[index]
    return result


def _pad(a):
    """A dummy unit (index U) with zero blocks, for the slots that feed none."""
    return jnp.concatenate([a, jnp.zeros((*a.shape[:-1], 1), a.dtype)], axis=-1)


def _propagate(trace, derivative, blocks, units, mask=None):
    """``e ← A_u e + ∂F_u/∂θ`` for every slot: trace, derivative (E, C, W,
    *leaf); blocks (E, W, W, U + 1); units (C, *leaf'); mask (C, W', *leaf')
    bool or None."""
    a = blocks[..., units]  # (E, W, W, C, *leaf')
    width = trace.shape[2]
    rows = [
        sum(a[:, w, v] * trace[:, :, v] for v in range(width)) + derivative[:, :, w]
        for w in range(width)
    ]
    new = jnp.stack(rows, axis=2)
    if mask is not None:
        new = jnp.where(mask[None], new, jnp.zeros((), new.dtype))
    return new.astype(trace.dtype)


def _contract(trace, delta, units):
    """Σ over examples, slots and components of δ_u · e: trace (E, C, W,
    *leaf), delta (E, W, U + 1) -> (*leaf)."""
    d = jnp.swapaxes(delta[..., units], 1, 2)  # (E, C, W, *leaf')
    products = (d * trace).reshape(-1, math.prod(trace.shape[3:]))
    # a sum over the leading axis as a GEMV: XLA:CPU reduces major axes ~20x slower
    ones = jnp.ones((1, products.shape[0]), products.dtype)
    total = jnp.matmul(ones, products, precision=jax.lax.Precision.HIGHEST)
    return total.reshape(trace.shape[3:])


# --- the diagonal blocks of ∂F/∂h ---------------------------------------------------


def _linear_blocks(cell, units, params, carry, x):
    """Exact: the coefficient a_t of ``Cell.linear`` as (W, W, U) blocks."""
    coefficients = cell.linear(params, _structure.transition_input(cell, params, x))
    if isinstance(coefficients, parallel.LogCoefficients):
        return jnp.exp(coefficients.log_a)[None, None]
    if isinstance(coefficients, parallel.BlockCoefficients):
        return jnp.moveaxis(coefficients.a, (-2, -1), (0, 1))
    a = coefficients[0]
    if not jnp.iscomplexobj(a):
        return a[None, None]
    re, im = jnp.real(a), jnp.imag(a)  # multiplying by λ rotates [Re, Im]
    return jnp.stack([jnp.stack([re, -im]), jnp.stack([im, re])])


def _has_pointwise(cell, structure):
    return cell.pointwise is not None and structure.units.stacked


def _pointwise_blocks(cell, units, params, carry, x):
    """SnAp-1's blocks from ``Cell.pointwise``: the step is element-wise in
    the carry and in ``hh = h W_hh``, whose column k reads unit k mod H
    through its own weight W_hh[k mod H, k] (the gate-major layout)."""
    xp = _structure.transition_input(cell, params, x)
    w_hh = params["w_hh"]
    hh = recurrent_product(cell.read(carry), w_hh, cell.compute_dtype)
    columns = np.arange(hh.shape[-1])
    own = w_hh[columns % units.count, columns].astype(hh.dtype)

    def planes(carry, hh):
        return to_planes(units, cell.pointwise(params, carry, xp, hh)[0])

    def column(v):  # column v of every unit's block
        tangent = from_planes(units, jnp.zeros((units.width, units.count), hh.dtype).at[v].set(1))
        read = cell.read(tangent)
        hh_tangent = jnp.tile(read, hh.shape[-1] // units.count) * own
        return jax.jvp(planes, (carry, hh), (tangent, hh_tangent))[1]

    return jnp.stack([column(v) for v in range(units.width)], axis=1)


def _jacobian_blocks(cell, units, params, carry, x):
    """SnAp-1's blocks from the whole Jacobian ∂F/∂h (S forward passes)."""

    def planes(h):
        return to_planes(units, transition(cell, params, from_planes(units, h), x))

    jacobian = jax.jacfwd(planes)(to_planes(units, carry))  # (W, U, W, U)
    diagonal = jnp.diagonal(jacobian, axis1=1, axis2=3)  # (W, W, U)
    return diagonal
