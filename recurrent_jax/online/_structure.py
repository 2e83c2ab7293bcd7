r"""Which state units each parameter feeds in one step, found once per cell.

The carry of one example is read as U *units* of W components, ``(W, U)``
planes: the components one unit's transition mixes. W = 1 for a real or
log-space diagonal (LRU-like real cells, minGRU, RG-LRU, S6) and for the
dense cells with one carry vector (Elman, GRU, MGU); W = 2 for a complex
diagonal (``[Re h, Im h]``: LRU, S4D, S5), 2×2 blocks (LinOSS) and
``LSTMCarry(h, c)`` (unit j is ``(h_j, c_j)``).

The immediate Jacobian ``D_t = ∂h_t/∂θ`` (h_{t−1} held fixed) is sparse:
param entry i feeds only some units. Its pattern is found numerically, by
one VJP per unit at three points (two initialisations of the cell and a
perturbed copy, random carries and inputs): a derivative that is nonzero
at any point is a feed. Each leaf then gets a *colouring* of the units
such that no entry feeds two units of one colour (greedy, as in the
compressed Jacobians of Curtis, Powell & Reid 1974), and the trace of that
leaf is stored compressed, one slot per colour: ``(C, W, *leaf)``, slot c
of entry i holding ``∂h_{u(c,i)}/∂θ_i`` for the unit ``u(c, i)`` of colour c
that i feeds. C = 1 where every entry feeds one unit (every diagonal input
matrix, bias and per-unit parameter); S4D's Δ and input map feed the N/2
modes of their channel (C = N/2), S6's input maps every unit (C = H·N).
Leaves that feed no unit (readouts such as ``w_out``, ``d``) get no trace:
their gradient is the ordinary per-step backprop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import parallel
from recurrent_jax.cells.base import Cell, carry_dtype_of

NUM_POINTS = 3  # where the pattern is probed: two initialisations and a perturbed copy


class Units(NamedTuple):
    """How one example's carry splits into ``count`` units of ``width``
    components (the ``(W, U)`` planes)."""

    width: int
    count: int
    treedef: Any  # the carry's structure
    stacked: bool  # planes are the carry's leaves stacked (else one leaf reshaped)


class Feeds(NamedTuple):
    """The units one leaf feeds: ``units`` (C, *leaf) with the unit fed
    through colour slot c (``count`` where none), axes along which it does
    not change kept as size 1; ``colours`` (U,) the colour of each unit;
    ``components`` (1, W, *leaf) bool, which components of its unit each
    entry feeds directly (where C = 1; None where C > 1)."""

    units: np.ndarray
    colours: np.ndarray
    components: np.ndarray | None


class Structure(NamedTuple):
    """What the diagonal traces need: the units, the params' tree, and per
    param leaf (in ``tree_leaves`` order) its path and ``Feeds`` or None."""

    units: Units
    input_size: int
    treedef: Any
    paths: tuple
    feeds: tuple


def units_of(cell: Cell, params, carry, x) -> Units:
    """The units of ``cell``'s per-example ``carry``: from the coefficient
    form of ``cell.linear`` if it has one, else one unit per index of the
    carry's equal-length leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    if cell.linear is not None:
        (size,) = leaves[0].shape
        coefficients = jax.eval_shape(
            lambda p, x: cell.linear(p, transition_input(cell, p, x)), params, x
        )
        complex_ = jnp.issubdtype(coefficients[0].dtype, jnp.complexfloating)
        width = 2 if isinstance(coefficients, parallel.BlockCoefficients) or complex_ else 1
        return Units(width, size // width, treedef, stacked=False)
    sizes = {leaf.shape for leaf in leaves}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise ValueError(
            f"cell: online traces need a carry of equal-length vectors (one unit per index), "
            f"got {cell.name} with leaf shapes {sorted(sizes)}; use rj.online.uoro"
        )
    return Units(len(leaves), leaves[0].shape[0], treedef, stacked=True)


def to_planes(units: Units, carry) -> jax.Array:
    """One example's carry as (W, U) planes."""
    leaves = jax.tree_util.tree_leaves(carry)
    if units.stacked:
        return jnp.stack(leaves)
    return leaves[0].reshape(units.width, units.count)


def from_planes(units: Units, planes):
    """(W, U) planes back to a carry."""
    if units.stacked:
        return jax.tree_util.tree_unflatten(units.treedef, list(planes))
    return jax.tree_util.tree_unflatten(units.treedef, [planes.reshape(-1)])


def transition_input(cell: Cell, params, x):
    """``project`` of one example's input x (D,)."""
    return cell.project(params, x[None])[0]


def transition(cell: Cell, params, carry, x):
    """One example's next carry from ``carry`` and the input x (D,)."""
    return cell.update(params, carry, transition_input(cell, params, x), cell.read(carry))[0]


def find(cell: Cell, input_size: int, seed: int = 0) -> Structure:
    """The ``Structure`` of ``cell`` with ``input_size`` input features."""
    with jax.ensure_compile_time_eval():  # concrete even when called under a trace
        points = _points(cell, input_size, seed)
        one = lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)  # noqa: E731
        units = units_of(cell, *jax.tree_util.tree_map(one, points))
        probes = jax.jit(lambda *point: _probes(cell, units, point))(*points)
        feeds = [
            _leaf_feeds(units, *(np.asarray(a) for a in leaf)) for leaf in zip(*probes, strict=True)
        ]
        shared = [i for i, f in enumerate(feeds) if f is _SHARED]
        if shared:
            patterns = jax.jit(lambda *point: _shared_patterns(cell, units, shared, point))
            for index, pattern in zip(shared, patterns(*points), strict=True):
                feeds[index] = _coloured(np.asarray(pattern).any(axis=0), units.count)
    paths, treedef = jax.tree_util.tree_flatten_with_path(points[0])
    paths = tuple(jax.tree_util.keystr(path) for path, _ in paths)
    return Structure(units, input_size, treedef, paths, tuple(feeds))


def _points(cell, input_size, seed):
    """(params, carry, x), each stacked over ``NUM_POINTS`` points: two
    initialisations and the first one perturbed, random carries and inputs.
    Only the cell's init runs on JAX's generator (the fast "unsafe_rbg":
    threefry's programs take long to compile); the rest is NumPy's."""
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed, impl="unsafe_rbg"), NUM_POINTS - 1)
    inits = jax.jit(jax.vmap(lambda k: cell.init(k, input_size)))(keys)

    def perturbed(a):
        a = np.asarray(a)
        return np.concatenate(
            [a, (a[0] + 0.1 * (1 + np.abs(a[0])) * rng.standard_normal(a.shape[1:]))[None]]
        )

    params = jax.tree_util.tree_map(lambda a: jnp.asarray(perturbed(a), a.dtype), inits)
    first = jax.tree_util.tree_map(lambda a: a[0], params)
    zeros = jax.eval_shape(lambda: cell.initial_carry((NUM_POINTS,), carry_dtype_of(cell, first)))
    random = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype)  # noqa: E731
    carry = jax.tree_util.tree_map(random, zeros)
    dtype = jax.tree_util.tree_leaves(carry)[0].dtype
    x = jnp.asarray(rng.standard_normal((NUM_POINTS, input_size)), dtype)
    return params, carry, x


def _unit_hits(cell, units, params, carry, x):
    """``hits(n)``: per param leaf, bool (W, *leaf), the entries whose
    derivative reaches component w of unit n."""

    def planes(p):
        return to_planes(units, transition(cell, p, carry, x))

    out, vjp = jax.vjp(planes, params)
    components = jnp.eye(units.width, dtype=out.dtype)[:, :, None]

    def hits(n):
        one_unit = components * (jnp.arange(units.count) == n).astype(out.dtype)[None, None]
        (grads,) = jax.vmap(vjp)(one_unit)
        return [g != 0 for g in jax.tree_util.tree_leaves(grads)]

    return hits


def _probe(cell, units, params, carry, x):
    """Per leaf: how many units each entry feeds, the last one, and which
    components (W, *leaf) of the units it feeds."""
    hits = _unit_hits(cell, units, params, carry, x)

    def body(acc, n):
        count, label, parts = acc
        hit = hits(n)
        unit = [h.any(axis=0) for h in hit]
        count = [c + h for c, h in zip(count, unit, strict=True)]
        label = [jnp.where(h, n, lab) for lab, h in zip(label, unit, strict=True)]
        parts = [p | h for p, h in zip(parts, hit, strict=True)]
        return (count, label, parts), None

    leaves = jax.tree_util.tree_leaves(params)
    count0 = [jnp.zeros(p.shape, jnp.int32) for p in leaves]
    label0 = [jnp.full(p.shape, units.count, jnp.int32) for p in leaves]
    parts0 = [jnp.zeros((units.width, *p.shape), bool) for p in leaves]
    units_ = jnp.arange(units.count, dtype=jnp.int32)
    return jax.lax.scan(body, (count0, label0, parts0), units_)[0]


def _probes(cell, units, points):
    """``_probe`` at every point (stacked on axis 0)."""
    return jax.vmap(lambda *point: _probe(cell, units, *point))(*points)


def _shared_patterns(cell, units, indices, points):
    """``_patterns`` at every point."""
    return jax.vmap(lambda *point: _patterns(cell, units, indices, *point))(*points)


def _patterns(cell, units, indices, params, carry, x):
    """Per leaf of ``indices``: (U, *leaf) bool, the units each entry feeds."""
    hits = _unit_hits(cell, units, params, carry, x)
    return jax.lax.map(lambda n: [hits(n)[i].any(axis=0) for i in indices], jnp.arange(units.count))


_SHARED = object()  # a leaf whose entries feed several units: needs its whole pattern


def _leaf_feeds(units, counts, labels, parts):
    """A leaf's ``Feeds`` from its probes (counts, labels (points, *leaf),
    parts (points, W, *leaf)): None if it feeds no unit, ``_SHARED`` if
    some entry feeds several."""
    label, agree = np.full(counts.shape[1:], units.count), True
    for count, lab in zip(counts, labels, strict=True):
        agree &= bool(np.all((count == 0) | (label == units.count) | (label == lab)))
        label = np.where(count > 0, lab, label)
    if np.all(label == units.count):
        return None
    if not agree or counts.max() > 1:
        return _SHARED
    return _compressed(label[None], np.zeros(units.count, np.int32), parts.any(axis=0)[None])


def _coloured(pattern, num_units) -> Feeds:
    """Greedy colouring of the units so that no entry feeds two units of a
    colour, and the unit of each colour that each entry feeds."""
    flat = pattern.reshape(num_units, -1)
    shared = flat.astype(np.int64) @ flat.T.astype(np.int64) > 0  # units sharing an entry
    colours = np.full(num_units, -1)
    for unit in range(num_units):
        taken = set(colours[shared[unit] & (colours >= 0)].tolist())
        colours[unit] = next(c for c in range(num_units) if c not in taken)
    slots = []
    for colour in range(colours.max() + 1):
        in_colour = flat & (colours == colour)[:, None]
        slots.append(np.where(in_colour.any(0), in_colour.argmax(0), num_units))
    units = np.stack(slots).reshape(len(slots), *pattern.shape[1:])
    return _compressed(units, colours, None)


def _compressed(units, colours, components) -> Feeds:
    """``Feeds`` with the leaf axes along which the unit map (and the
    component mask) is constant kept as size 1 (an input matrix's rows),
    so that gathering by it is small and broadcasts."""
    return Feeds(
        _constant_axes_dropped(units).astype(np.int32),
        colours.astype(np.int32),
        None if components is None else _constant_axes_dropped(components),
    )


def _constant_axes_dropped(a):
    """``a`` (C, [W,] *leaf) with the leaf axes along which it does not change kept as size 1."""
    for axis in range(1, a.ndim):
        first = a.take([0], axis=axis)
        if np.all(a == first):
            a = first
    return a
