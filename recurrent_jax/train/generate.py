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
