"""Sampling symbols from a trained sequence model, one step at a time."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from recurrent_jax.data.base import one_hot
from recurrent_jax.train.config import RNNModelConfig
from recurrent_jax.train.hparams import Rates
from recurrent_jax.train.rnn_model import make_network

SAMPLES_FILE = "samples.txt"


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def generate(
    model: RNNModelConfig,
    params: dict,
    first_id,
    key,
    length: int,
    vocab_size: int,
    temperature=1.0,
):
    """``length`` symbol ids sampled after ``first_id``.

    Each step feeds the previous symbol (one-hot, or its embedding) through the recurrent stack
    with the carry of the step before, then draws from
    softmax(logits / temperature); ``temperature=0`` takes the argmax.
    """
    network = make_network(model, Rates())
    w, b = params["readout"]["w"], params["readout"]["b"]
    embed = params.get("embedding")  # token inputs, else one-hot symbols
    width = vocab_size if embed is None else embed.shape[-1]
    carries, _ = network.apply(params["rnn"], jnp.zeros((1, 0, width)), deterministic=True)

    def step(state, step_key):
        carries, token = state
        x = (one_hot(token, vocab_size) if embed is None else embed[token]).reshape(1, 1, width)
        carries, ys = network.apply(params["rnn"], x, initial_carry=carries, deterministic=True)
        logits = ys[0, 0] @ w + b
        scaled = logits / jnp.maximum(temperature, 1e-6)
        sampled = jax.random.categorical(step_key, scaled)
        token = jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)
        return (carries, token), token

    start = (carries, jnp.asarray(first_id, jnp.int32))
    _, ids = jax.lax.scan(step, start, jax.random.split(key, length))
    return ids


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 7))
def continue_ids(
    model: RNNModelConfig,
    params: dict,
    prompt,
    key,
    length: int,
    vocab_size: int,
    temperature=1.0,
    top_k: int | None = None,
    rates: Rates | None = None,
):
    """``length`` symbol ids sampled after the ids ``prompt`` (P,), P >= 1.

    The prompt is read in one call of the recurrent stack; then each step
    draws from softmax(logits / temperature) of the last output, among the
    ``top_k`` most likely symbols when given (``temperature=0``: the
    argmax), and feeds the symbol back with the carry. ``rates``: the
    run's regulariser rates (zoneout's expectation at evaluation).
    """
    network = make_network(model, rates)
    w, b = params["readout"]["w"], params["readout"]["b"]
    embed = params.get("embedding")  # token inputs, else one-hot symbols
    width = vocab_size if embed is None else embed.shape[-1]

    def read(ids, carries=None):
        x = one_hot(ids, vocab_size) if embed is None else embed[ids]
        carries, ys = network.apply(
            params["rnn"], x.reshape(1, -1, width), initial_carry=carries, deterministic=True
        )
        return carries, ys[0, -1] @ w + b

    def step(state, step_key):
        carries, logits = state
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        sampled = jax.random.categorical(step_key, logits / jnp.maximum(temperature, 1e-6))
        token = jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)
        return read(token[None], carries), token

    _, ids = jax.lax.scan(step, read(prompt), jax.random.split(key, length))
    return ids
