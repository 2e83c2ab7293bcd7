"""A researcher's own cell: IndRNN (Li et al., 2018),
h_t = relu(x_t W + u ⊙ h_{t-1} + b), u starting at ``init_u``.
``config.model.cell = "indrnn:indrnn"``, ``config.model.cell_options =
{"init_u": 0.5}``."""

import jax
import jax.numpy as jnp

import recurrent_jax as rj


def indrnn(hidden_size: int, *, init_u: float = 0.9) -> rj.Cell:
    def init(key, input_size):
        w = jax.random.normal(key, (input_size, hidden_size)) / jnp.sqrt(input_size)
        return {"w": w, "u": jnp.full((hidden_size,), init_u), "b": jnp.zeros(hidden_size)}

    def step(params, h, x):  # h: (B, H), x: (B, D) -> (new carry, output)
        h = jax.nn.relu(x @ params["w"] + params["u"] * h + params["b"])
        return h, h

    return rj.Cell(init=init, step=step, hidden_size=hidden_size, name="indrnn")
