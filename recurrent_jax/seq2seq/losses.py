r"""Masked sequence losses and accuracies.

``logits`` (B, T, V), ``targets`` (B, T) ints, and which tokens count given
by ``lengths`` (B,) (steps t < length) or a bool ``mask`` (B, T); neither
means all. Padded tokens change no value here.

Label smoothing α (optax's convention, ``optax.smooth_labels``): the target
distribution is ``(1 − α)·onehot + α/V`` over all V classes, and the loss is
``optax.softmax_cross_entropy`` against it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from recurrent_jax import _checks
from recurrent_jax.cells.base import widen
from recurrent_jax.sequence import length_mask

REDUCTIONS = ("mean", "sum", "none")


def token_mask(targets: jax.Array, lengths=None, mask=None) -> jax.Array:
    """bool (B, T): the tokens that count."""
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(
            f"targets: expected integer token ids of shape (B, T), got {_checks.describe(targets)}"
        )
    batch, num_steps = targets.shape
    if lengths is not None and mask is not None:
        raise ValueError("lengths, mask: give at most one of them, got both")
    if lengths is not None:
        lengths = _checks.check_seq_lengths(lengths, (batch,), num_steps)
        return length_mask(lengths, num_steps)
    if mask is not None:
        return _checks.check_mask("mask", mask, (batch, num_steps))
    return jnp.ones((batch, num_steps), bool)


def sequence_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    *,
    lengths=None,
    mask=None,
    label_smoothing=0.0,
    reduction: str = "mean",
) -> jax.Array:
    """Cross-entropy of ``targets`` under ``logits`` over the valid tokens.

    Args:
      logits: (B, T, V).
      targets: (B, T) ints in [0, V).
      lengths, mask: which tokens count (see the module doc).
      label_smoothing: α in [0, 1) (may be traced).
      reduction: "mean" over valid tokens (0 when there are none), "sum", or
        "none" for the per-token losses (B, T), zero at invalid tokens.
    """
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    valid = token_mask(targets, lengths, mask)
    _check_logits(logits, targets)
    if _checks.is_concrete(label_smoothing) and not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing!r}")
    logits = widen(logits)  # fp32 at least
    labels = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    labels = optax.smooth_labels(labels, label_smoothing)
    per_token = optax.softmax_cross_entropy(logits, labels)
    per_token = jnp.where(valid, per_token, 0.0)
    if reduction == "none":
        return per_token
    total = per_token.sum()
    return total if reduction == "sum" else total / jnp.maximum(valid.sum(), 1)


def token_accuracy(logits_or_ids, targets, *, lengths=None, mask=None) -> jax.Array:
    """Fraction of valid tokens whose argmax (or given id) equals the
    target; 0 when no token is valid."""
    valid = token_mask(targets, lengths, mask)
    correct = (_predictions(logits_or_ids, targets) == targets) & valid
    return correct.sum() / jnp.maximum(valid.sum(), 1)


def sequence_accuracy(logits_or_ids, targets, *, lengths=None, mask=None) -> jax.Array:
    """Fraction of sequences whose every valid token is right (exact
    match; a sequence with no valid token counts as right)."""
    valid = token_mask(targets, lengths, mask)
    wrong = (_predictions(logits_or_ids, targets) != targets) & valid
    return jnp.mean(~wrong.any(-1))


def _predictions(logits_or_ids, targets):
    if logits_or_ids.ndim == targets.ndim + 1:
        return jnp.argmax(logits_or_ids, -1)
    if logits_or_ids.shape != targets.shape:
        raise ValueError(
            f"logits_or_ids: expected logits (B, T, V) or ids shaped like targets "
            f"{tuple(targets.shape)}, got {_checks.describe(logits_or_ids)}"
        )
    return logits_or_ids


def _check_logits(logits, targets):
    if logits.ndim != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits: expected shape (B, T, V) with (B, T) = {tuple(targets.shape)} "
            f"(the targets'), got {_checks.describe(logits)}"
        )
