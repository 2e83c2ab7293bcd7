"""Flax linen modules: thin wrappers over cells, ``unroll`` and layers.

A module's params are exactly the pure core's params (``layer.init``'s
dict), so functional and module code share checkpoints::

    model = rj.nn.LSTM(128, num_layers=2, bidirectional=True)
    params = model.init(key, xs, seq_lengths=lengths)["params"]
    ys = model.apply({"params": params}, xs, seq_lengths=lengths)

Randomness: dropout, recurrent dropout and zoneout draw from the "dropout"
RNG stream (``rngs={"dropout": key}``) when ``deterministic=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from recurrent_jax import cells as cells_lib
from recurrent_jax import initializers, layers
from recurrent_jax.cells.base import Cell
from recurrent_jax.seq2seq.module import Seq2Seq as Seq2Seq


def _register_params(module: nn.Module, init_fn, input_size: int):
    """Registers each top-level entry of ``init_fn(key, input_size)`` as a
    flax param of the same name, so ``variables["params"]`` is that dict."""
    names = jax.eval_shape(lambda: init_fn(jax.random.PRNGKey(0), input_size)).keys()

    def entry(name):
        return lambda rng: init_fn(rng, input_size)[name]

    return {name: module.param(name, entry(name)) for name in names}


def _resolve_deterministic(module, deterministic, rates):
    deterministic = module.deterministic if deterministic is None else deterministic
    if deterministic is not None:
        return deterministic
    if all(isinstance(r, (int, float)) and r == 0 for r in rates):
        return True
    raise ValueError(
        "deterministic: expected True (evaluation) or False (training) for a "
        "module with dropout, recurrent_dropout or zoneout, got None"
    )


def _apply_layer(module, layer, xs, seq_lengths, mask, initial_carry, deterministic, rates):
    params = _register_params(module, layer.init, xs.shape[-1])
    deterministic = _resolve_deterministic(module, deterministic, rates)
    key = None
    if not deterministic and module.has_rng("dropout"):
        key = module.make_rng("dropout")
    carry, ys = layer.apply(
        params,
        xs,
        seq_lengths=seq_lengths,
        mask=mask,
        initial_carry=initial_carry,
        key=key,
        deterministic=deterministic,
        return_sequences=module.return_sequences,
    )
    return (carry, ys) if module.return_carry else ys


def _layer_options(module) -> dict:
    """The ``layers.layer`` options an ``RNN`` or ``Bidirectional`` carries."""
    names = ("learn_initial_carry", "dropout", "recurrent_dropout", "zoneout")
    names += ("time_major", "unroll", "impl")
    return {name: getattr(module, name) for name in names}


class RNN(nn.Module):
    """Any ``Cell`` (or ``layers.Layer``) over a sequence.

    Attributes:
      cell: a Cell, e.g. ``rj.cells.gru(64)``, or a Layer (then the layer
        options below are the layer's own and are ignored here).
      reverse, learn_initial_carry, dropout (variational input dropout),
      recurrent_dropout, zoneout, time_major, unroll, impl: see
        ``rj.layers.layer`` and ``rj.unroll``.
      return_sequences: ys (B..., T, H) when True, else the output after the
        whole sequence was read (B..., H).
      return_carry: return ``(final_carry, outputs)``.
      deterministic: evaluation mode (may also be given per call).

    Call: ``(xs, *, seq_lengths=None, mask=None, initial_carry=None,
    deterministic=None)`` with xs (B..., T, D).
    """

    cell: Cell | layers.Layer
    reverse: bool = False
    learn_initial_carry: bool = False
    dropout: Any = 0.0
    recurrent_dropout: Any = 0.0
    zoneout: Any = 0.0
    time_major: bool = False
    unroll: int | str = "auto"
    impl: str = "auto"
    return_sequences: bool = True
    return_carry: bool = False
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        rates = (self.dropout, self.recurrent_dropout, self.zoneout)
        layer = self.cell
        if not isinstance(layer, layers.Layer):
            layer = layers.layer(self.cell, reverse=self.reverse, **_layer_options(self))
        else:
            rates = ()  # the layer's own rates decide; need an explicit mode
        return _apply_layer(self, layer, xs, seq_lengths, mask, initial_carry, deterministic, rates)


class Bidirectional(nn.Module):
    """``forward`` left to right, ``backward`` right to left, merged.

    Attributes:
      forward, backward: Cells (``backward`` defaults to a copy of
        ``forward`` with its own params).
      merge_mode: "concat", "sum", "mul", "ave", None (a pair) or a callable.
      Other attributes as ``RNN``.

    Params: ``{"forward": ..., "backward": ...}``.
    """

    forward: Cell
    backward: Cell | None = None
    merge_mode: str | None | Callable = "concat"
    learn_initial_carry: bool = False
    dropout: Any = 0.0
    recurrent_dropout: Any = 0.0
    zoneout: Any = 0.0
    time_major: bool = False
    unroll: int | str = "auto"
    impl: str = "auto"
    return_sequences: bool = True
    return_carry: bool = False
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        rates = (self.dropout, self.recurrent_dropout, self.zoneout)
        layer = layers.bidirectional(
            self.forward, self.backward, merge_mode=self.merge_mode, **_layer_options(self)
        )
        return _apply_layer(self, layer, xs, seq_lengths, mask, initial_carry, deterministic, rates)


class _StackedRNN(nn.Module):
    """Shared body of ``SimpleRNN``, ``LSTM`` and ``GRU``: ``num_layers``
    layers, each optionally bidirectional, like PyTorch's ``nn.LSTM``.

    Attributes:
      hidden_size: H.
      num_layers: layers stacked (params ``layer_0``, ``layer_1``, ...).
      bidirectional, merge_mode: each layer runs both directions, merged
        ("concat" gives 2H features to the next layer, as PyTorch).
      dropout: dropout on every layer's outputs but the last (PyTorch).
      input_dropout, recurrent_dropout: per-sequence variational masks inside
        every layer (Keras's ``dropout`` and ``recurrent_dropout``).
      zoneout: zoneout rate of every layer's carry.
      residual: residual connections from the second layer up.
      learn_initial_carry: a learned initial carry per layer and direction.
      bias, kernel_init, recurrent_init, bias_init, param_dtype, dtype: cell
        options (``rj.cells.CellOptions``).
      Other attributes as ``RNN``.

    Call as ``RNN``. The carry returned with ``return_carry`` is a tuple, one
    per layer; a bidirectional layer's is ``(forward, backward)``.
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge_mode: str | None | Callable = "concat"
    dropout: Any = 0.0
    input_dropout: Any = 0.0
    recurrent_dropout: Any = 0.0
    zoneout: Any = 0.0
    residual: bool = False
    learn_initial_carry: bool = False
    time_major: bool = False
    unroll: int | str = "auto"
    impl: str = "auto"
    return_sequences: bool = True
    return_carry: bool = False
    deterministic: bool | None = None
    bias: str = "double"
    kernel_init: Callable = jax.nn.initializers.glorot_uniform()
    recurrent_init: Callable = initializers.orthogonal()
    bias_init: Callable = jax.nn.initializers.zeros
    param_dtype: Any = jnp.float32
    dtype: Any = None

    def make_cell(self) -> Cell:
        raise NotImplementedError

    def cell_options(self) -> dict:
        return dict(
            bias=self.bias,
            kernel_init=self.kernel_init,
            recurrent_init=self.recurrent_init,
            bias_init=self.bias_init,
            param_dtype=self.param_dtype,
            dtype=self.dtype,
        )

    def make_layer(self) -> layers.Layer:
        if (
            isinstance(self.num_layers, bool)
            or not isinstance(self.num_layers, int)
            or self.num_layers < 1
        ):
            raise ValueError(f"num_layers: expected a positive int, got {self.num_layers!r}")
        cell = self.make_cell()
        options = dict(
            learn_initial_carry=self.learn_initial_carry,
            dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout,
            time_major=self.time_major,
            unroll=self.unroll,
            impl=self.impl,
        )
        if self.bidirectional:
            one = layers.bidirectional(cell, merge_mode=self.merge_mode, **options)
        else:
            one = layers.layer(cell, **options)
        return layers.stack(
            [one] * self.num_layers,
            dropout=self.dropout,
            residual=self.residual,
            time_major=self.time_major,
        )

    @nn.compact
    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        rates = (self.dropout, self.input_dropout, self.recurrent_dropout, self.zoneout)
        layer = self.make_layer()
        return _apply_layer(self, layer, xs, seq_lengths, mask, initial_carry, deterministic, rates)


class SimpleRNN(_StackedRNN):
    """Stacked Elman RNN (PyTorch ``nn.RNN``); ``activation`` "tanh" or "relu"."""

    activation: str | Callable = "tanh"

    def make_cell(self) -> Cell:
        return cells_lib.elman(self.hidden_size, activation=self.activation, **self.cell_options())


class LSTM(_StackedRNN):
    """Stacked LSTM (PyTorch ``nn.LSTM``); cell options ``proj_size``,
    ``peephole``, ``layer_norm``, ``forget_bias`` as ``rj.cells.lstm``."""

    proj_size: int | None = None
    peephole: bool = False
    layer_norm: bool = False
    forget_bias: float = 1.0

    def make_cell(self) -> Cell:
        return cells_lib.lstm(
            self.hidden_size,
            proj_size=self.proj_size,
            peephole=self.peephole,
            layer_norm=self.layer_norm,
            forget_bias=self.forget_bias,
            **self.cell_options(),
        )


class GRU(_StackedRNN):
    """Stacked GRU (PyTorch ``nn.GRU``); ``reset_after`` as ``rj.cells.gru``."""

    reset_after: bool = True

    def make_cell(self) -> Cell:
        return cells_lib.gru(self.hidden_size, reset_after=self.reset_after, **self.cell_options())
