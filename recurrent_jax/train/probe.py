"""Inside a trained recurrent network: every layer's carry after each step
and, for LSTM and GRU cells, the gate activations (``run.states(xs)``) —
what analyses of trained RNNs read (saturation, forget-gate timescales).

Each layer of the run's stack (``rnn_model.make_network``) runs on the
previous layer's outputs with ``rj.unroll(..., return_carries=True)`` on
the reference ``scan`` backend, evaluation mode (zoneout's expectation).
Gates are recomputed from the carries: for a plain LSTM (PyTorch's i, f,
g, o; ``Cell.cudnn_kernel`` "lstm") ``σ``/``tanh`` of ``x_t W_ih + b +
h_{t-1} W_hh``, for a plain GRU (reset after, "gru") r, z and the
candidate n.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.data.base import Inputs
from recurrent_jax.mamba import BLOCKS
from recurrent_jax.train import rnn_model
from recurrent_jax.train.config import ConfigError


def states(run, xs, seq_lengths=None) -> dict:
    """Named per-step arrays of ``run`` (a ``LoadedRun`` of the ``rnn``
    model kind) on ``xs`` (raw inputs or texts, as ``run.predict``).

    Names: ``layer_<i>/<carry field>`` (``h``, ``c`` of an LSTM, ``h`` of
    an array carry; ``layer_<i>/forward/h``... for bidirectional layers),
    each (N, T, ...) — the carry after reading step t, aligned with the
    inputs (a backward direction's after reading steps T-1..t); with LSTM
    cells ``layer_<i>/gates/input``, ``forget``, ``cell``, ``output``, with
    GRU cells ``reset``, ``update``, ``candidate``, each (N, T, H); and
    ``layer_<i>/outputs``, the layer's outputs. Zero past each length;
    ``lengths`` (N,) the valid steps.
    """
    from recurrent_jax.train.predict import model_inputs

    model = run.config.model
    if model.KIND != "rnn" or model.cell in BLOCKS:
        raise ConfigError(
            f"states: expected a run of recurrent cells (model.kind 'rnn'), got model.kind "
            f"{model.KIND!r} with cell {model.cell!r}"
        )
    x, lengths = model_inputs(run, xs, seq_lengths)
    encode = (run.task.inputs or Inputs()).encode
    zoneout = run.hparams.zoneout if model.zoneout else 0.0
    found = _probe(model, encode, len(run.task.spatial_shape))(run.params, x, lengths, zoneout)
    return jax.device_get(found) | {"lengths": lengths}


@functools.lru_cache(maxsize=8)
def _probe(model, encode, spatial_dims: int):
    cell = rnn_model.make_cell(model, spatial_dims)
    directions = ("forward", "backward") if model.bidirectional else ("forward",)

    def run_layers(params, x, lengths, zoneout):
        xs = x if encode is None else encode(x, lengths)
        xs = xs if "embedding" not in params else params["embedding"][xs]
        mask = rj.length_mask(lengths, xs.shape[1])
        found = {}
        for i in range(model.num_layers):
            layer = params["rnn"][f"layer_{i}"]
            outputs = []
            for direction in directions:
                p = layer[direction] if model.bidirectional else layer
                where = f"layer_{i}/{direction}" if model.bidirectional else f"layer_{i}"
                ys, named = _direction(cell, p, xs, mask, direction == "backward", zoneout)
                found |= {f"{where}/{name}": a for name, a in named.items()}
                outputs.append(ys)
            ys = jnp.concatenate(outputs, -1)
            xs = ys + xs if model.residual and i > 0 else ys
            found[f"layer_{i}/outputs"] = xs
        return found

    return jax.jit(run_layers)


def _direction(cell, params, xs, mask, reverse: bool, zoneout):
    _, ys, carries = rj.unroll(
        cell,
        params,
        xs,
        mask=mask,
        reverse=reverse,
        return_carries=True,
        zoneout=zoneout,
        deterministic=True,
        engine=rj.Engine(impl="scan"),
    )
    named = _carry_fields(carries)
    gates = GATES.get(cell.cudnn_kernel)
    if gates is not None:
        previous = _previous(named["h"], mask, reverse)
        hh = jnp.einsum("...k,kg->...g", previous, params["w_hh"])
        pre = cell.project(params, xs)
        found = gates(pre, hh, params)
        named |= {f"gates/{k}": jnp.where(mask[..., None], v, 0.0) for k, v in found.items()}
    return ys, named


def _carry_fields(carries) -> dict:
    if hasattr(carries, "_fields"):
        return dict(zip(carries._fields, carries, strict=True))
    leaves = jax.tree_util.tree_leaves(carries)
    return {"h": leaves[0]} if len(leaves) == 1 else {f"carry_{j}": a for j, a in enumerate(leaves)}


def _previous(h, mask, reverse: bool):
    """h_{t-1} of each step t (t+1 for the backward direction): the carry
    one step earlier in reading order, zeros (the initial carry) first."""
    zeros = jnp.zeros_like(h[:, :1])
    if not reverse:
        return jnp.concatenate([zeros, h[:, :-1]], axis=1)
    later = jnp.concatenate([h[:, 1:], zeros], axis=1)
    has_later = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    return jnp.where(has_later[..., None], later, 0.0)


def _lstm_gates(pre, hh, params) -> dict:
    i, f, g, o = jnp.split(pre + hh, 4, axis=-1)
    sigmoid = jax.nn.sigmoid
    return {"input": sigmoid(i), "forget": sigmoid(f), "cell": jnp.tanh(g), "output": sigmoid(o)}


def _gru_gates(pre, hh, params) -> dict:
    x_r, x_z, x_n = jnp.split(pre, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hh, 3, axis=-1)
    if "b_hh" in params:  # the double bias: b_hn sits inside r ⊙ (...)
        h_n = h_n + rj.cells.base.lift(params["b_hh"][2 * h_n.shape[-1] :], h_n)
    reset = jax.nn.sigmoid(x_r + h_r)
    update = jax.nn.sigmoid(x_z + h_z)
    return {"reset": reset, "update": update, "candidate": jnp.tanh(x_n + reset * h_n)}


# Cell.cudnn_kernel -> the gates of that plain recurrence
GATES = {"lstm": _lstm_gates, "gru": _gru_gates}
