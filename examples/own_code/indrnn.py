"""A researcher's own cell: IndRNN (Li et al., 2018),
h_t = relu(x_t W + u ⊙ h_{t-1} + b). ``config.model.cell = "indrnn:indrnn"``."""

import jax
import jax.numpy as jnp

import recurrent_jax as rj


def indrnn(hidden_size: int, **options) -> rj.Cell:
    def init(key, input_size):
        w = jax.random.normal(key, (input_size, hidden_size)) / jnp.sqrt(input_size)
        return {"w": w, "u": jnp.full((hidden_size,), 0.9), "b": jnp.zeros(hidden_size)}

    def step(params, h, x):  # h: (B, H), x: (B, D) -> (new carry, output)
        h = jax.nn.relu(x @ params["w"] + params["u"] * h + params["b"])
        return h, h

    return rj.Cell(init=init, step=step, hidden_size=hidden_size, name="indrnn")
