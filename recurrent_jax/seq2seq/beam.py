"""Beam search over a step function, ranked by the GNMT score.

The step-function protocol, the letters (B, V, L, K, S) and the counting of
lengths and scores are those of ``decoding`` (see its module doc).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax._checks import describe, is_concrete
from recurrent_jax.seq2seq.decoding import (
    Array,
    StepFn,
    _check_ids,
    _check_nonnegative,
    _probe,
    _Spec,
    _step,
)


class BeamDecoded(NamedTuple):
    """Output of ``beam_search``: R = ``num_return`` hypotheses per row, best
    first, or the single best one (the R axis dropped) when it is None.

    sequences: int32 (B, R, L) or (B, L).
    scores: (B, R) or (B,), the GNMT score that ranks them.
    log_probs: (B, R) or (B,), log P(Y|X); both fp32, float64 for float64 logits.
    lengths: int32 (B, R) or (B,), |Y| including the EOS.
    aux: leaves (B, R, L, ...) or (B, L, ...), the ``aux`` of the steps that
      emitted each hypothesis's tokens; None when the step returns no aux.
    A slot that holds no hypothesis has score -inf and length 0.
    """

    sequences: Array
    scores: Array
    log_probs: Array
    lengths: Array
    aux: Any


def tile_beams(tree, beam_size: int):
    """Repeats every leaf (B, ...) to (B·K, ...): row b·K + k is row b."""
    _checks.check_positive_int("beam_size", beam_size)
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def gather_beams(tree, beam_indices: Array):
    """Picks beams within each batch row.

    Leaves (B·K, ...) and ``beam_indices`` int (B, N) with values in [0, K)
    give leaves (B·N, ...) whose row b·N + n is row b·K + beam_indices[b, n].
    """
    batch, num = beam_indices.shape

    def gather(x):
        rows = x.reshape(batch, x.shape[0] // batch, *x.shape[1:])
        return _take(rows, beam_indices).reshape(batch * num, *x.shape[1:])

    return jax.tree_util.tree_map(gather, tree)


def _take(x: Array, indices: Array) -> Array:
    """``x`` (B, K, ...), ``indices`` (B, N) -> (B, N, ...)."""
    return jax.vmap(lambda row, i: row[i])(x, indices)


class _Beams(NamedTuple):
    """K hypotheses per row: (B, K) leading axes (state: B·K rows)."""

    sequences: Array  # int32 (B, K, L)
    log_probs: Array  # (B, K)
    aux: Any  # leaves (B, K, L, ...)
    coverage: Array | None  # (B, K, S), attention summed over the decoded steps
    state: Any = None  # alive only
    scores: Array | None = None  # finished only
    lengths: Array | None = None  # finished only


class _Penalties(NamedTuple):
    alpha: Any
    beta: Any
    source_mask: Array | None


def beam_search(
    step_fn: StepFn,
    init_state,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    length_penalty=0.0,
    coverage_penalty=0.0,
    source_mask=None,
    pad_id: int = 0,
    num_return: int | None = None,
    early_stopping: bool = True,
) -> BeamDecoded:
    r"""Beam search ranked by the GNMT score (Wu et al. 2016).

    .. math::
        s(Y, X) = \log P(Y|X) / lp(Y) + cp(X; Y), \quad
        lp(Y) = ((5 + |Y|) / 6)^\alpha, \quad
        cp(X; Y) = \beta \sum_i \log \min(\sum_{j<|Y|} p_{i,j}, 1)

    with |Y| counting the EOS (so lp = 1 for a lone EOS when α > 0 too) and
    p_{i,j} the attention on source position i at step j, the step's ``aux``
    (B, S); positions where ``source_mask`` is False leave the sum.

    The search keeps K alive hypotheses per row, each without EOS, ranked by
    log P. Step t expands each into V and ranks the K·V expansions by log P:

    - an expansion ending in EOS (at t = L-1: any expansion) that ranks
      among the K best becomes finished, scored by s(Y, X) with |Y| = t + 1;
      the K best finished hypotheses by score are kept;
    - the K best expansions not ending in EOS stay alive.

    With ``early_stopping`` a row stops once K hypotheses have finished in
    it (Hugging Face's ``early_stopping=True``, fairseq's rule); this makes
    ``beam_size=1`` the same as ``greedy_decode``. Without it the search runs
    all L steps, so a longer hypothesis can still win when α > 0. Either
    way, a beam of V^L or more holds every hypothesis, and the search is
    exhaustive.

    Args:
      step_fn: ``step_fn(state, tokens) -> (logits, new_state[, aux])``, run
        on B·K rows; the coverage penalty needs aux = attention (B·K, S).
      init_state: leaves (B, ...), tiled to (B·K, ...) by ``tile_beams``.
      beam_size: K, a static positive int.
      bos_id, eos_id, pad_id: token ids in [0, V).
      max_len: L, the static number of steps.
      length_penalty: α >= 0, Python float or traced scalar.
      coverage_penalty: β >= 0, Python float or traced scalar.
      source_mask: bool (B, S), True at the source positions cp sums over;
        None: all. Mask out padding: a position whose attention sums to 0
        makes cp = -inf.
      num_return: None (the best hypothesis) or a static int in [1, K].
      early_stopping: stop a row once K of its hypotheses have finished.

    Returns:
      ``BeamDecoded``: sequences (B, R, L), scores (B, R), log_probs
      (B, R), lengths (B, R), aux (B, R, L, ...) or None; without the R
      axis when ``num_return`` is None.
    """
    _checks.check_positive_int("beam_size", beam_size)
    _checks.check_positive_int("max_len", max_len)
    spec = _probe(step_fn, init_state)
    bos_id, eos_id, pad_id = _check_ids(spec, bos_id, eos_id, pad_id)
    if num_return is not None and (
        isinstance(num_return, bool)
        or not isinstance(num_return, int)
        or not 1 <= num_return <= beam_size
    ):
        raise ValueError(
            f"num_return: expected None or an int in [1, {beam_size}], got {num_return!r}"
        )
    penalties = _Penalties(
        _check_nonnegative("length_penalty", length_penalty),
        _check_nonnegative("coverage_penalty", coverage_penalty),
        None,
    )
    with_coverage = not (is_concrete(coverage_penalty) and float(coverage_penalty) == 0.0)
    if with_coverage:
        penalties = penalties._replace(source_mask=_check_coverage(spec, source_mask))
    alive, finished = _initial_beams(spec, init_state, beam_size, max_len, pad_id, with_coverage)
    config = (step_fn, bos_id, eos_id, max_len, penalties, early_stopping)

    def body(carry, t):
        return _beam_step(carry, t, *config), None

    (_, finished, _), _ = jax.lax.scan(
        body, (alive, finished, jnp.zeros((spec.batch_size,), jnp.int32)), jnp.arange(max_len)
    )
    pick = (lambda x: x[:, 0]) if num_return is None else (lambda x: x[:, :num_return])
    aux = jax.tree_util.tree_map(pick, finished.aux)
    return BeamDecoded(
        *map(pick, (finished.sequences, finished.scores, finished.log_probs, finished.lengths)),
        aux,
    )


def _check_coverage(spec: _Spec, source_mask):
    aux = spec.aux
    if not (hasattr(aux, "shape") and aux.ndim == 2 and jnp.issubdtype(aux.dtype, jnp.floating)):
        raise ValueError(
            "coverage_penalty: expected a step_fn whose third value (aux) is the attention "
            f"weights (B, S), got aux {jax.tree_util.tree_map(describe, aux)}"
        )
    if source_mask is None:
        return None
    if getattr(source_mask, "dtype", None) != jnp.bool_ or tuple(source_mask.shape) != aux.shape:
        raise ValueError(
            f"source_mask: expected bool {aux.shape} (B, S of the attention), "
            f"got {describe(source_mask)}"
        )
    return source_mask


def _initial_beams(spec, init_state, beam_size, max_len, pad_id, with_coverage):
    batch, k = spec.batch_size, beam_size
    aux = jax.tree_util.tree_map(
        lambda a: jnp.zeros((batch, k, max_len, *a.shape[1:]), a.dtype), spec.aux
    )
    beams = _Beams(
        sequences=jnp.full((batch, k, max_len), pad_id, jnp.int32),
        log_probs=jnp.full((batch, k), -jnp.inf, spec.dtype),
        aux=aux,
        coverage=jnp.zeros((batch, k, spec.aux.shape[1]), spec.dtype) if with_coverage else None,
    )
    # One live beam at first: K copies of it would fill the beam with duplicates.
    alive = beams._replace(
        log_probs=beams.log_probs.at[:, 0].set(0.0),
        state=tile_beams(init_state, k),
    )
    finished = beams._replace(
        coverage=None, scores=beams.log_probs, lengths=jnp.zeros((batch, k), jnp.int32)
    )
    return alive, finished


def _beam_step(carry, t, step_fn, bos_id, eos_id, max_len, penalties, early_stopping):
    alive, finished, count = carry
    batch, k, _ = alive.sequences.shape
    previous = jnp.where(t == 0, bos_id, alive.sequences[:, :, jnp.maximum(t - 1, 0)])
    log_probs, state, aux = _step(step_fn, alive.state, previous.reshape(batch * k))
    vocab = log_probs.shape[-1]
    alive = _record(alive, aux, t)
    expansions = alive.log_probs[:, :, None] + log_probs.reshape(batch, k, vocab)
    expansions = expansions.reshape(batch, k * vocab)
    is_eos = jnp.arange(k * vocab) % vocab == eos_id

    best, index = jax.lax.top_k(expansions, k)
    ends = (is_eos | (t == max_len - 1))[index] & jnp.isfinite(best)
    if early_stopping:
        ends = ends & (count < k)[:, None]
    finished = _merge(finished, _extend(alive, best, index, t, vocab), ends, t, penalties)

    best, index = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, expansions), k)
    alive = _extend(alive, best, index, t, vocab)
    alive = alive._replace(state=gather_beams(state, index // vocab))
    return alive, finished, count + ends.sum(axis=1, dtype=jnp.int32)


def _record(alive: _Beams, aux, t) -> _Beams:
    """Writes step t's aux (B·K, ...) into the alive history (and coverage)."""
    batch, k, _ = alive.sequences.shape
    aux = jax.tree_util.tree_map(lambda a: a.reshape(batch, k, *a.shape[1:]), aux)
    history = jax.tree_util.tree_map(lambda h, a: h.at[:, :, t].set(a), alive.aux, aux)
    coverage = alive.coverage
    if coverage is not None:
        coverage = coverage + aux.astype(coverage.dtype)
    return alive._replace(aux=history, coverage=coverage)


def _extend(alive: _Beams, log_probs: Array, index: Array, t, vocab: int) -> _Beams:
    """The expansions at ``index`` (B, N) of the flattened (K·V) axis, with
    their summed ``log_probs`` (B, N)."""
    parent, token = index // vocab, (index % vocab).astype(jnp.int32)
    sequences = _take(alive.sequences, parent).at[:, :, t].set(token)
    aux = jax.tree_util.tree_map(lambda h: _take(h, parent), alive.aux)
    coverage = None if alive.coverage is None else _take(alive.coverage, parent)
    return _Beams(sequences, log_probs, aux, coverage)


def _merge(finished: _Beams, new: _Beams, ends: Array, t, penalties: _Penalties) -> _Beams:
    """Keeps the K best by score of the finished and the ``ends`` (B, K) of
    ``new``; ties keep the older, so an empty slot never displaces one."""
    scores = jnp.where(ends, _gnmt_score(new.log_probs, t + 1, new.coverage, penalties), -jnp.inf)
    new = new._replace(
        log_probs=jnp.where(ends, new.log_probs, -jnp.inf),
        coverage=None,
        scores=scores,
        lengths=jnp.where(ends, t + 1, 0).astype(jnp.int32),
    )
    both = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=1), finished, new)
    _, index = jax.lax.top_k(both.scores, finished.scores.shape[1])
    return jax.tree_util.tree_map(lambda x: _take(x, index), both)


def _gnmt_score(log_probs: Array, length, coverage, penalties: _Penalties) -> Array:
    """log P / ((5 + |Y|) / 6)^α + β Σ_i log min(coverage_i, 1)."""
    lp = jnp.power((5.0 + jnp.asarray(length, log_probs.dtype)) / 6.0, penalties.alpha)
    score = log_probs / lp
    if coverage is None:
        return score
    log_coverage = jnp.log(jnp.minimum(coverage, 1.0))
    if penalties.source_mask is not None:
        log_coverage = jnp.where(penalties.source_mask[:, None, :], log_coverage, 0.0)
    beta = penalties.beta
    return score + jnp.where(beta > 0, beta * log_coverage.sum(axis=-1), 0.0)
