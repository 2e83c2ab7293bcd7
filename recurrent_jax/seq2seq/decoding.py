"""Inference decoding over a step function: greedy and sampling (beam search
is in ``beam``, on the same conventions).

Any decoder plugs in through one pure function::

    step_fn(state, tokens) -> (logits, new_state)
    step_fn(state, tokens) -> (logits, new_state, aux)

``tokens`` int32 (B,) is the previous token of each row, ``logits`` float
(B, V) scores the next one, ``state`` is any pytree whose leaves all have the
leading batch axis B, and the optional ``aux`` is a pytree of (B, ...) arrays
the step exposes, such as attention weights (B, S). Everything a step reads
per example (encoder outputs, source masks) belongs in ``state``: beam search
runs the step on B·K rows, so per-example arrays closed over by ``step_fn``
would have to be tiled with ``tile_beams`` first.

Letters: B batch, V vocabulary, L ``max_len``, K ``beam_size``, S source
positions.

Counting, shared by every decoder: step t = 0, ..., L-1 reads y_{t-1}
(``bos_id`` at t = 0) and emits y_t. A hypothesis Y ends at its first
``eos_id``, which belongs to it, or after L tokens; its length |Y| counts
every token including the EOS, so 1 <= |Y| <= L. Its log-probability is
log P(Y|X) = Σ_{t<|Y|} log softmax(logits_t)[y_t]. Positions t >= |Y| hold
``pad_id`` and zero ``aux``, and add nothing to the scores.

The token ids, ``max_len``, ``beam_size``, ``top_k``, ``num_return`` and
``early_stopping`` are static Python values; the state, key, temperature,
penalties and source mask may be traced. The functions are pure: jit them
with the step function and the static values bound, and vmap them over
extra leading axes of the state, the keys or the penalties::

    search = jax.jit(functools.partial(
        rj.seq2seq.beam_search, step_fn, beam_size=4, bos_id=1, eos_id=2, max_len=50))
    best = search(init_state, length_penalty=0.6)    # best.sequences (B, L)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax._checks import describe, is_concrete
from recurrent_jax.cells.base import carry_dtype, widen

Array = jax.Array
StepFn = Callable[..., tuple]


class Decoded(NamedTuple):
    """Output of ``greedy_decode`` and ``sample_decode``.

    sequences: int32 (B, L), ``pad_id`` after the end.
    scores: (B,) in fp32 (float64 for float64 logits), log P(Y|X) under the
      model's (untempered) softmax.
    lengths: int32 (B,), |Y| including the EOS.
    aux: the steps' ``aux`` stacked to leaves (B, L, ...), zero after the
      end; None when the step returns no aux.
    """

    sequences: Array
    scores: Array
    lengths: Array
    aux: Any


# --- checks -------------------------------------------------------------------


class _Spec(NamedTuple):
    batch_size: int
    vocab_size: int
    aux: Any  # ShapeDtypeStructs of the step's aux, or None
    dtype: Any = jnp.float32  # of log-probabilities and scores: the logits', fp32 at least


def _probe(step_fn, init_state) -> _Spec:
    """Traces one step abstractly and checks what goes in and comes out."""
    leaves = jax.tree_util.tree_leaves(init_state)
    shapes = [tuple(getattr(x, "shape", ())) for x in leaves]
    if not shapes or any(not s for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(
            f"init_state: expected a pytree of arrays sharing the leading batch axis B, "
            f"got leaf shapes {shapes}"
        )
    batch = shapes[0][0]
    state = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), init_state)
    out = jax.eval_shape(step_fn, state, jax.ShapeDtypeStruct((batch,), jnp.int32))
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError(
            "step_fn: expected to return (logits, new_state) or (logits, new_state, aux), "
            f"got {type(out).__name__}"
        )
    logits, new_state = out[:2]
    if logits.ndim != 2 or logits.shape[0] != batch:
        raise ValueError(f"step_fn: expected logits of shape ({batch}, V), got {describe(logits)}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"step_fn: expected floating logits, got {describe(logits)}")
    if jax.tree_util.tree_structure(new_state) != jax.tree_util.tree_structure(state) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree_util.tree_leaves(new_state), leaves, strict=True)
    ):
        raise ValueError(
            "step_fn: expected new_state with the structure, shapes and dtypes of init_state "
            f"{jax.tree_util.tree_map(describe, state)}, got "
            f"{jax.tree_util.tree_map(describe, new_state)}"
        )
    aux = out[2] if len(out) == 3 else None
    if any(a.ndim == 0 or a.shape[0] != batch for a in jax.tree_util.tree_leaves(aux)):
        raise ValueError(
            f"step_fn: expected aux leaves with leading batch axis {batch}, "
            f"got {jax.tree_util.tree_map(describe, aux)}"
        )
    return _Spec(batch, logits.shape[1], aux, carry_dtype(logits.dtype))


def _check_id(name: str, value, vocab_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected a Python int token id, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ValueError(
            f"{name}: expected a token id in [0, {vocab_size}) (V of the logits), got {value}"
        )
    return int(value)


def _check_ids(spec: _Spec, bos_id, eos_id, pad_id) -> tuple[int, int, int]:
    return tuple(
        _check_id(name, value, spec.vocab_size)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id))
    )


def _check_nonnegative(name: str, value):
    if is_concrete(value) and not (math.isfinite(float(value)) and float(value) >= 0.0):
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return value


def _check_top_k(top_k, vocab_size: int):
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab_size:
        raise ValueError(
            f"top_k: expected None or an int in [1, {vocab_size}] (V of the logits), got {top_k!r}"
        )
    return top_k


def _rows(mask: Array, leaf: Array) -> Array:
    """``mask`` with trailing 1-axes up to the rank of ``leaf``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _step(step_fn, state, tokens):
    """(log_probs (B, V) in fp32 or wider, new_state, aux or None)."""
    out = step_fn(state, tokens)
    aux = out[2] if len(out) == 3 else None
    return jax.nn.log_softmax(widen(out[0]), axis=-1), out[1], aux


# --- greedy and sampling --------------------------------------------------------


def greedy_decode(
    step_fn: StepFn, init_state, *, bos_id: int, eos_id: int, max_len: int, pad_id: int = 0
) -> Decoded:
    """Decodes y_t = argmax_v logits_t[v] until EOS or ``max_len`` tokens.

    Args:
      step_fn: ``step_fn(state, tokens) -> (logits, new_state[, aux])``.
      init_state: the decoder state before the first token, leaves (B, ...).
      bos_id, eos_id, pad_id: token ids in [0, V).
      max_len: L, the static number of steps.

    Returns:
      ``Decoded`` with sequences (B, L), scores log P(Y|X) (B,), lengths
      (B,) and aux (B, L, ...) or None.
    """
    _checks.check_positive_int("max_len", max_len)
    spec = _probe(step_fn, init_state)
    ids = _check_ids(spec, bos_id, eos_id, pad_id)
    return _decode(step_fn, init_state, spec, _argmax, None, max_len, *ids)


def sample_decode(
    step_fn: StepFn,
    init_state,
    key,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    temperature=1.0,
    top_k: int | None = None,
    pad_id: int = 0,
) -> Decoded:
    """Draws y_t ~ softmax(logits_t / temperature), restricted to the top_k
    largest logits when ``top_k`` is given, until EOS or ``max_len`` tokens.

    Step t draws with ``jax.random.split(key, max_len)[t]``. ``top_k=1`` is
    ``greedy_decode``. ``scores`` are log-probabilities under the model's own
    softmax, not the tempered or truncated one.

    Args:
      key: a PRNG key.
      temperature: > 0, Python float or traced scalar (a traced one is not
        checked).
      top_k: None (the whole vocabulary) or a static int in [1, V].
      step_fn, init_state, bos_id, eos_id, max_len, pad_id: as
        ``greedy_decode``.
    """
    _checks.check_positive_int("max_len", max_len)
    if is_concrete(temperature) and not float(temperature) > 0.0:
        raise ValueError(f"temperature: expected a value > 0, got {temperature!r}")
    spec = _probe(step_fn, init_state)
    ids = _check_ids(spec, bos_id, eos_id, pad_id)
    choose = _sampler(temperature, _check_top_k(top_k, spec.vocab_size))
    keys = jax.random.split(key, max_len)
    return _decode(step_fn, init_state, spec, choose, keys, max_len, *ids)


def _argmax(log_probs, key):
    return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)


def _sampler(temperature, top_k):
    def choose(log_probs, key):
        scaled = log_probs / temperature
        if top_k is None:
            return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
        values, indices = jax.lax.top_k(scaled, top_k)
        pick = jax.random.categorical(key, values, axis=-1)
        return jnp.take_along_axis(indices, pick[:, None], axis=-1)[:, 0].astype(jnp.int32)

    return choose


def _decode(step_fn, init_state, spec, choose, keys, max_len, bos_id, eos_id, pad_id) -> Decoded:
    """The loop of greedy and sampled decoding: ``choose(log_probs, key)``
    picks the tokens (B,) of every step."""

    def body(carry, key):
        state, tokens, done, score, length = carry
        log_probs, state, aux = _step(step_fn, state, tokens)
        token = jnp.where(done, pad_id, choose(log_probs, key))
        picked = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
        score = score + jnp.where(done, 0.0, picked)
        length = length + (~done).astype(jnp.int32)
        aux = jax.tree_util.tree_map(lambda a: jnp.where(_rows(done, a), 0, a), aux)
        return (state, token, done | (token == eos_id), score, length), (token, aux)

    batch = spec.batch_size
    carry = (
        init_state,
        jnp.full((batch,), bos_id, jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.zeros((batch,), spec.dtype),
        jnp.zeros((batch,), jnp.int32),
    )
    (_, _, _, score, length), (tokens, aux) = jax.lax.scan(body, carry, keys, length=max_len)
    aux = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), aux)
    return Decoded(tokens.T, score, length, aux)
