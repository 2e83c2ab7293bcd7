"""The encoder (any cell, stacked, optionally bidirectional) and the bridge
from its final carries to the decoder's initial carries.

Layer rule of every bridge: the tops are aligned. With ``L_e`` encoder and
``L_d`` decoder layers, decoder layer ``j`` receives encoder layer
``j + L_e - L_d``; decoder layers for which that index is negative (a deeper
decoder) start from their cell's initial (zero) carry, and the lowest
encoder layers of a deeper encoder are not used.

Direction rule: a bidirectional encoder layer's carry is its forward and
backward carries concatenated leaf by leaf along the features (h with h, c
with c), so it has twice the features of one direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, layers
from recurrent_jax.cells.base import Cell, carry_dtype, widen, with_defaults

BRIDGES = ("copy", "linear", "zeros")
_glorot = jax.nn.initializers.glorot_uniform()


def make_encoder(
    cell: Cell, *, num_layers: int = 1, bidirectional: bool = False, **layer_options
) -> layers.Layer:
    """``num_layers`` layers of ``cell`` (own params each), each run in both
    directions with outputs concatenated when ``bidirectional``.

    Returns an ``rj.Layer``: ``apply(params, xs (B, S, D), seq_lengths=...)
    -> (carries, outputs)``; carries a tuple per layer (``(forward,
    backward)`` pairs when bidirectional), outputs (B, S, H or 2H), zero at
    padded steps. ``layer_options`` go to ``rj.layer`` (e.g. ``engine``).
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"encoder_layers: expected a positive int, got {num_layers!r}")
    if bidirectional:
        one = layers.bidirectional(cell, merge_mode="concat", **layer_options)
    else:
        one = layers.layer(cell, **layer_options)
    return layers.stack([one] * num_layers)


class Bridge(NamedTuple):
    """Encoder final carries to decoder initial carries, as pure functions.

    Attributes:
      init: ``init(key, encoder_carries) -> params``; the carries may be
        ``jax.ShapeDtypeStruct`` leaves (from ``jax.eval_shape``).
      apply: ``apply(params, encoder_carries) -> decoder_carries``, a tuple
        with one carry per decoder cell, leaves (B, ·).
      mode: "copy", "linear" or "zeros".
    """

    init: Callable
    apply: Callable
    mode: str


def layer_pairs(num_encoder: int, num_decoder: int) -> list[int | None]:
    """For each decoder layer, the encoder layer it receives (or None)."""
    offset = num_encoder - num_decoder
    return [j + offset if j + offset >= 0 else None for j in range(num_decoder)]


def merge_directions(carry, bidirectional: bool):
    """A bidirectional layer's ``(forward, backward)`` carries concatenated
    leaf by leaf; a unidirectional carry unchanged."""
    if not bidirectional:
        return carry
    fwd, bwd = carry
    return jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b], axis=-1), fwd, bwd)


def make_bridge(mode: str, decoder_cells: Sequence[Cell], *, bidirectional_encoder: bool) -> Bridge:
    """A bridge by name (see the module docstring for the layer rule).

    - "copy": decoder layer j starts from its encoder layer's carry (with
      directions concatenated); the carries must have the same structure
      and leaf sizes, else a ValueError names both.
    - "linear": all leaves of the encoder layer's carry concatenated, ``x``
      (B, F_e), then ``x w + b`` split into the decoder carry's leaves.
      Params ``{"layer_j": {"w": (F_e, F_d), "b": (F_d,)}}`` for the decoder
      layers that receive an encoder layer.
    - "zeros": the decoder cells' initial carries. No params.
    """
    _checks.check_choice("bridge", mode, BRIDGES)
    cells = [with_defaults(c) for c in decoder_cells]
    templates = [jax.eval_shape(lambda c=c: c.initial_carry(())) for c in cells]

    def pairs(encoder_carries):
        return layer_pairs(len(encoder_carries), len(cells))

    def merged(encoder_carries):
        return [merge_directions(c, bidirectional_encoder) for c in encoder_carries]

    def init(key, encoder_carries):
        enc = jax.eval_shape(merged, encoder_carries)
        if mode != "linear":
            if mode == "copy":
                _check_copy(enc, pairs(encoder_carries), templates)
            return {}
        params = {}
        keys = jax.random.split(key, len(cells))
        for j, i in enumerate(pairs(encoder_carries)):
            if i is None:
                continue
            size_in = sum(leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(enc[i]))
            size_out = sum(leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(templates[j]))
            params[f"layer_{j}"] = {
                "w": _glorot(keys[j], (size_in, size_out), jnp.float32),
                "b": jnp.zeros((size_out,), jnp.float32),
            }
        return params

    def apply(params, encoder_carries):
        enc = merged(encoder_carries)
        batch = jax.tree_util.tree_leaves(enc[0])[0].shape[:-1]
        dtype = carry_dtype(*(a.dtype for a in jax.tree_util.tree_leaves(enc)))
        pair = pairs(encoder_carries)
        if mode == "copy":
            _check_copy(enc, pair, templates)
        out = []
        for j, (cell, i) in enumerate(zip(cells, pair, strict=True)):
            if i is None or mode == "zeros":
                out.append(cell.initial_carry(batch, dtype))
            elif mode == "copy":
                out.append(jax.tree_util.tree_map(widen, enc[i]))
            else:
                out.append(_linear(params[f"layer_{j}"], enc[i], templates[j]))
        return tuple(out)

    return Bridge(init, apply, mode)


def _linear(params, carry, template):
    x = jnp.concatenate(jax.tree_util.tree_leaves(carry), axis=-1)
    y = x @ params["w"] + params["b"][None, :]
    leaves, treedef = jax.tree_util.tree_flatten(template)
    sizes = [leaf.shape[-1] for leaf in leaves]
    splits = [sum(sizes[:k]) for k in range(1, len(sizes))]
    return jax.tree_util.tree_unflatten(treedef, jnp.split(y, splits, axis=-1))


def _check_copy(encoder_carries, pairs, templates):
    for j, i in enumerate(pairs):
        if i is None:
            continue
        got, want = encoder_carries[i], templates[j]
        got_def = jax.tree_util.tree_structure(got)
        want_def = jax.tree_util.tree_structure(want)
        got_sizes = [leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(got)]
        want_sizes = [leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(want)]
        if got_def != want_def or got_sizes != want_sizes:
            raise ValueError(
                f"bridge: 'copy' needs encoder layer {i}'s final carry {got_def} with "
                f"sizes {got_sizes} (directions concatenated) to match decoder layer "
                f"{j}'s carry {want_def} with sizes {want_sizes}; use bridge='linear' "
                f"or 'zeros', or matching hidden sizes and cells"
            )
