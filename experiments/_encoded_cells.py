"""Cells behind a position-wise gated encoder, for the studies' configs by
import path (``model.cell = "_encoded_cells:lru"``; ``experiments/`` is on
``sys.path`` when a study runs).

A linear recurrence (LRU, S5, LinOSS) read at its last step by a linear
readout computes an affine function of the inputs, and the adding problem's
target Σ_t v_t m_t is not one: the papers put a nonlinearity between the
recurrences of a stack. Here one layer keeps its memory in the cell and
gets the nonlinearity before it instead — every cell of a comparison reads
the same gated linear unit (Dauphin et al. 2017) of each input x_t (D):

    e_t = (x_t W_a + b_a) ⊙ σ(x_t W_g + b_g)        (E = ``ENCODED`` features)

which can form v_t·m_t for a cell to sum, but remembers nothing itself.
The encoder lives in the cell's ``project`` (the input half of every cell,
applied to the whole sequence at once), so the engine runs each cell's own
step unchanged. Its params join the cell's: ``w_ih`` (D, 2E) ``[W_a, W_g]``
(the rows of ``w_ih`` are what the engine checks inputs against) and
``b_enc`` (2E,); the cell's own input weights move to ``w_cell``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.cells import Cell

ENCODED = 8  # E: features the encoder hands each cell


def encoded(cell: Cell, features: int = ENCODED) -> Cell:
    """``cell`` reading the GLU encoding (E = ``features``) of its inputs.
    The CPU backend's kernel projects raw inputs itself, so it is turned
    off (``cudnn_kernel=None``); every other backend calls ``project``."""

    def init(key, input_size):
        k_cell, k_enc = jax.random.split(key)
        params = cell.init(k_cell, features)
        params["w_cell"] = params.pop("w_ih")
        bound = 1.0 / input_size**0.5  # PyTorch's nn.Linear init
        w = jax.random.uniform(k_enc, (input_size, 2 * features), minval=-bound, maxval=bound)
        return {**params, "w_ih": w, "b_enc": jnp.zeros((2 * features,))}

    def project(params, xs):
        bias = params["b_enc"].reshape((1,) * (xs.ndim - 1) + (-1,))
        value, gate = jnp.split(xs @ params["w_ih"] + bias, 2, axis=-1)
        return cell.project({**params, "w_ih": params["w_cell"]}, value * jax.nn.sigmoid(gate))

    return cell._replace(init=init, project=project, cudnn_kernel=None)


def lstm(hidden_size: int, **options) -> Cell:
    return encoded(rj.cells.lstm(hidden_size, **options))


def gru(hidden_size: int, **options) -> Cell:
    return encoded(rj.cells.gru(hidden_size, **options))


def lru(hidden_size: int, **options) -> Cell:
    """N = H complex states (the cell's default)."""
    return encoded(rj.cells.lru(hidden_size, **options))


def s5(hidden_size: int, **options) -> Cell:
    """P = 2H complex states (H stored), one HiPPO-N block."""
    return encoded(rj.cells.s5(hidden_size, state_size=2 * hidden_size, blocks=1, **options))


def s6(hidden_size: int, **options) -> Cell:
    """N = 16 real states per channel (Mamba's default)."""
    return encoded(rj.cells.s6(hidden_size, **options))


def linoss(hidden_size: int, **options) -> Cell:
    """P = H oscillators, LinOSS-IM (the cell's default discretisation)."""
    return encoded(rj.cells.linoss(hidden_size, state_size=hidden_size, **options))
