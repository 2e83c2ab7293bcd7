r"""Attention mechanisms over a masked memory (the encoder outputs).

An ``Attention`` is a NamedTuple of pure functions, like a ``Cell``. Shapes:
``B`` batch, ``S`` source steps, ``Q`` query features (the decoder's top
output), ``M`` memory features (the encoder's outputs), ``U`` attention units.

Scores (``q`` the query, ``h_s`` the memory at source step s):

- additive (Bahdanau et al. 2015): ``v · tanh(W_q q + W_k h_s)``; with
  ``normalize`` (weight normalisation, Salimans & Kingma 2016, as TF Addons'
  ``BahdanauAttention(normalize=True)``):
  ``(g v / ‖v‖) · tanh(W_q q + W_k h_s + b)``.
- dot (Luong et al. 2015): ``q · h_s`` (needs Q = M).
- general (Luong): ``q · (h_s W)``, W (M, Q).
- concat (Luong): ``v · tanh(W_a [q; h_s]) = v · tanh(W_q q + W_k h_s)``.

The Luong kinds take ``scale``: the score times a learned scalar ``g``
(initially 1), as TF Addons' ``LuongAttention(scale=True)``.
Projections carry no bias (as the papers and TF Addons).

Weights are the softmax of the scores over the valid source steps only:
masked steps get exactly zero weight (``jnp.where``, no additive -1e9), the
valid weights sum to one, and a length-0 source gets all-zero weights and a
zero context vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells.base import carry_dtype, widen

KINDS = ("additive", "dot", "general", "concat")
_glorot = jax.nn.initializers.glorot_uniform()


class Attention(NamedTuple):
    """An attention mechanism as pure functions.

    Attributes:
      init: ``init(key, query_size, memory_size) -> params``.
      process_memory: ``process_memory(params, memory (B, S, M)) -> keys
        (B, S, U)``: the query-independent half of the score, computed once
        per source sequence.
      score: ``score(params, query (B, Q), keys (B, S, U)) -> (B, S)``.
      name: the kind, for messages.
    """

    init: Callable
    process_memory: Callable
    score: Callable
    name: str


class Memory(NamedTuple):
    """What the decoder attends over: ``values`` (B, S, M) the encoder
    outputs, ``keys`` (B, S, U) from ``process_memory``, ``mask`` bool (B, S)
    True at valid source steps."""

    values: jax.Array
    keys: jax.Array
    mask: jax.Array


def make_attention(
    kind: str, units: int | None = None, *, normalize: bool = False, scale: bool = False
) -> Attention:
    """An attention mechanism by name.

    Args:
      kind: "additive" (Bahdanau), "dot", "general" or "concat" (Luong).
      units: U, the size of the projected keys of "additive" and "concat"
        (required there; "general" projects onto Q, "dot" has none).
      normalize: weight normalisation of "additive" (params ``g``, ``b``).
      scale: a learned scalar ``g`` times the Luong scores.
    """
    _checks.check_choice("attention", kind, KINDS)
    if kind == "additive":
        if scale:
            raise ValueError("scale: applies to the Luong kinds, not 'additive'; got True")
        return additive(_units(kind, units), normalize=normalize)
    if normalize:
        raise ValueError(f"normalize: applies to 'additive' only, got True with {kind!r}")
    if kind == "concat":
        return concat(_units(kind, units), scale=scale)
    return (dot if kind == "dot" else general)(scale=scale)


def _units(kind, units):
    if units is None:
        raise ValueError(f"attention_size: {kind!r} attention needs a positive int, got None")
    return _checks.check_positive_int("attention_size", units)


def _vector(key, size):
    return _glorot(key, (size, 1), jnp.float32)[:, 0]


def _tanh_keys_init(units, extra):
    def init(key, query_size, memory_size):
        k_q, k_k, k_v = jax.random.split(key, 3)
        params = {
            "w_query": _glorot(k_q, (query_size, units), jnp.float32),
            "w_memory": _glorot(k_k, (memory_size, units), jnp.float32),
            "v": _vector(k_v, units),
        }
        return params | extra(units)

    return init


def _project_memory(params, memory):
    return memory @ params["w_memory"]


def additive(units: int, *, normalize: bool = False) -> Attention:
    r"""Bahdanau attention: ``score = v · tanh(q W_query + h_s W_memory)``.

    With ``normalize``: ``v`` is replaced by ``g v / ‖v‖`` and a bias ``b``
    (U,) is added inside the tanh; ``g`` starts at ``sqrt(1/U)``, ``b`` at 0.

    Params: ``w_query`` (Q, U), ``w_memory`` (M, U), ``v`` (U,) [, ``g``
    scalar, ``b`` (U,)].
    """
    _checks.check_positive_int("attention_size", units)

    def extra(u):
        if not normalize:
            return {}
        return {"g": jnp.asarray(jnp.sqrt(1.0 / u), jnp.float32), "b": jnp.zeros(u)}

    def score(params, query, keys):
        pre = keys + (query @ params["w_query"])[:, None, :]
        v = params["v"]
        if normalize:
            pre = pre + params["b"][None, None, :]
            v = params["g"] * v * jax.lax.rsqrt(jnp.sum(jnp.square(v)))
        return jnp.tanh(pre) @ v

    init = _tanh_keys_init(units, extra)
    return Attention(init, _project_memory, score, "additive")


def _scaled(score, scale):
    if not scale:
        return score
    return lambda params, query, keys: params["g"] * score(params, query, keys)


def _scale_param(scale):
    return {"g": jnp.ones((), jnp.float32)} if scale else {}


def dot(*, scale: bool = False) -> Attention:
    """Luong dot: ``score = q · h_s``; Q must equal M. Params: [``g``]."""

    def init(key, query_size, memory_size):
        if query_size != memory_size:
            raise ValueError(
                f"attention: 'dot' needs the decoder output size (query, {query_size}) "
                f"to equal the encoder output size (memory, {memory_size}); use 'general'"
            )
        return _scale_param(scale)

    def score(params, query, keys):
        return jnp.einsum("bq,bsq->bs", query, keys)

    return Attention(init, lambda params, memory: memory, _scaled(score, scale), "dot")


def general(*, scale: bool = False) -> Attention:
    """Luong general: ``score = q · (h_s W_memory)``.

    Params: ``w_memory`` (M, Q) [, ``g``]."""

    def init(key, query_size, memory_size):
        return {"w_memory": _glorot(key, (memory_size, query_size), jnp.float32)} | _scale_param(
            scale
        )

    def score(params, query, keys):
        return jnp.einsum("bq,bsq->bs", query, keys)

    return Attention(init, _project_memory, _scaled(score, scale), "general")


def concat(units: int, *, scale: bool = False) -> Attention:
    """Luong concat: ``score = v · tanh(W_a [q; h_s])`` with W_a split as
    ``[w_query; w_memory]``. Params: ``w_query`` (Q, U), ``w_memory``
    (M, U), ``v`` (U,) [, ``g``]."""
    _checks.check_positive_int("attention_size", units)

    def score(params, query, keys):
        return jnp.tanh(keys + (query @ params["w_query"])[:, None, :]) @ params["v"]

    init = _tanh_keys_init(units, lambda u: _scale_param(scale))
    return Attention(init, _project_memory, _scaled(score, scale), "concat")


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis restricted to ``mask``: exactly 0 where
    masked, summing to 1 over the valid entries, all zeros if none is valid.
    The masked scores never reach ``exp`` (finite gradients)."""
    scores = widen(scores)
    top = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, scores - top, 0.0)), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def make_memory(mechanism: Attention, params, values: jax.Array, mask: jax.Array) -> Memory:
    """The ``Memory`` of encoder outputs ``values`` (B, S, M), bool ``mask``
    (B, S)."""
    return Memory(values, mechanism.process_memory(params, values), mask)


def attend(mechanism: Attention, params, query: jax.Array, memory: Memory):
    """``(context (B, M), weights (B, S))`` for ``query`` (B, Q):
    ``weights = masked_softmax(score)``, ``context = Σ_s weights_s h_s``."""
    weights = masked_softmax(mechanism.score(params, query, memory.keys), memory.mask)
    dtype = carry_dtype(weights.dtype, memory.values.dtype)
    context = jnp.einsum("bs,bsm->bm", weights.astype(dtype), memory.values.astype(dtype))
    return context, weights
