r"""Training-time decoding: teacher forcing and scheduled sampling.

Both run any one-step function ``step_fn(state, tokens (B,) int32) ->
(logits (B, V), state[, aux])`` (the signature of the inference decoders)
over the target inputs with ``jax.lax.scan``.

Scheduled sampling (Bengio et al. 2015): at every step t ≥ 1 and for every
sequence independently, with probability ``p`` (``sampling_probability``)
the decoder reads its own previous prediction instead of the ground-truth
previous token; step 0 always reads ``tgt_in[:, 0]`` (BOS). The prediction is
drawn from ``softmax(logits_{t-1})`` (``feedback="sample"``) or is its argmax
(``feedback="argmax"``). ``p`` may be a traced scalar (vmap a sweep over it).
Bengio's schedules give the teacher-forcing probability ε_i at training
step i; the sampling probability is ``p = 1 − ε_i``:

- linear: ε_i = max(ε, k − c·i)
- exponential: ε_i = k^i  (k < 1)
- inverse sigmoid: ε_i = k / (k + exp(i / k))  (k ≥ 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks

FEEDBACKS = ("sample", "argmax")
SAMPLING_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")


class TrainingDecode(NamedTuple):
    """``logits`` (B, T, V); ``aux`` the step's third output stacked over
    time (B, T, ...) (None when it has none; the attention decoder's
    alignment history (B, T, S)); ``inputs`` (B, T) the tokens read."""

    logits: jax.Array
    aux: Any
    inputs: jax.Array


def _call(step_fn, state, tokens):
    out = step_fn(state, tokens)
    return (out[0], out[1], None) if len(out) == 2 else out


def teacher_forcing(step_fn: Callable, state, tgt_in: jax.Array) -> TrainingDecode:
    """Runs ``step_fn`` over the ground-truth inputs ``tgt_in`` (B, T)."""

    def body(state, tokens):
        logits, state, aux = _call(step_fn, state, tokens)
        return state, (logits, aux)

    _, (logits, aux) = jax.lax.scan(body, state, jnp.moveaxis(tgt_in, -1, 0))
    return TrainingDecode(_batch_major(logits), _batch_major(aux), tgt_in)


def scheduled_sampling(
    step_fn: Callable,
    state,
    tgt_in: jax.Array,
    *,
    sampling_probability,
    key: jax.Array,
    feedback: str = "sample",
) -> TrainingDecode:
    """Scheduled sampling over ``tgt_in`` (B, T) (see the module doc).

    Randomness: ``k_coin, k_sample = jax.random.split(key)``; sequence b
    reads its own prediction at step t ≥ 1 where
    ``jax.random.uniform(k_coin, (B, T))[b, t] < p``; the prediction made at
    step t is ``jax.random.categorical(jax.random.split(k_sample, T)[t],
    logits_t)``. So p = 0 is teacher forcing exactly, and p = 1 feeds back
    every prediction.
    """
    p = check_sampling_arguments(sampling_probability, key, feedback)
    batch, num_steps = tgt_in.shape
    k_coin, k_sample = jax.random.split(key)
    use_model = jax.random.uniform(k_coin, (batch, num_steps)) < p
    use_model = use_model.at[:, 0].set(False)
    step_keys = jax.random.split(k_sample, num_steps)

    def body(carry, inputs):
        state, predicted = carry
        truth, own, k = inputs
        tokens = jnp.where(own, predicted, truth)
        logits, state, aux = _call(step_fn, state, tokens)
        if feedback == "argmax":
            predicted = jnp.argmax(logits, -1).astype(tgt_in.dtype)
        else:
            predicted = jax.random.categorical(k, logits).astype(tgt_in.dtype)
        return (state, predicted), (logits, aux, tokens)

    xs = (tgt_in.T, use_model.T, step_keys)
    _, (logits, aux, tokens) = jax.lax.scan(body, (state, tgt_in[:, 0]), xs)
    return TrainingDecode(_batch_major(logits), _batch_major(aux), tokens.T)


def _batch_major(tree):
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), tree)


def check_sampling_arguments(sampling_probability, key, feedback):
    """Checks the arguments of ``scheduled_sampling``; returns p as fp32."""
    _checks.check_choice("feedback", feedback, FEEDBACKS)
    p = sampling_probability
    if _checks.is_concrete(p) and not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"sampling_probability: expected a value in [0, 1], got {p!r}")
    if key is None:
        raise ValueError("key: scheduled sampling needs a PRNG key, got None")
    return jnp.asarray(p, jnp.float32)


# --- schedules (Bengio et al. 2015, section 2.4) --------------------------


def linear_decay(step, *, k: float = 1.0, c: float, epsilon: float = 0.0):
    """Teacher-forcing probability ε_i = max(ε, k − c·i)."""
    return jnp.maximum(epsilon, k - c * jnp.asarray(step, jnp.float32))


def exponential_decay(step, *, k: float):
    """Teacher-forcing probability ε_i = k^i, 0 < k < 1."""
    return jnp.power(jnp.asarray(k, jnp.float32), jnp.asarray(step, jnp.float32))


def inverse_sigmoid_decay(step, *, k: float):
    """Teacher-forcing probability ε_i = k / (k + exp(i/k)), k ≥ 1."""
    i = jnp.asarray(step, jnp.float32)
    return k / (k + jnp.exp(i / k))


def sampling_schedule(kind: str, **options) -> Callable:
    """``schedule(step) -> p``, the sampling probability 1 − ε_step, for
    ``kind`` "linear" (options ``k``, ``c``, ``epsilon``), "exponential"
    (``k``), "inverse_sigmoid" (``k``) or "constant" (``p``). ``step`` may be
    traced."""
    _checks.check_choice("schedule", kind, SAMPLING_SCHEDULES)
    if kind == "constant":
        p = options.get("p", 0.0)
        return lambda step: jnp.full(jnp.shape(step), p, jnp.float32)
    decay = {
        "linear": linear_decay,
        "exponential": exponential_decay,
        "inverse_sigmoid": inverse_sigmoid_decay,
    }[kind]
    return lambda step: 1.0 - decay(step, **options)
