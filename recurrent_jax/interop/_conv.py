"""Convolutional LSTMs from Keras 3 (``ConvLSTM1D/2D/3D``) and Flax linen
(``ConvLSTMCell``): ``(cell, params)`` for ``rj.cells.conv_lstm``.

Kernels are HWIO in all three, so only the gate blocks of the last axis
move: Keras's order (i, f, c, o) is ours; Flax's is (i, g, f, o) and it adds
a constant 1 to the forget pre-activation, which lands in our ``b_ih``.
"""

from __future__ import annotations

import numpy as np

from recurrent_jax.cells.conv import conv_lstm

FLAX_TO_OURS = (0, 2, 1, 3)  # (i, g, f, o) blocks -> (i, f, g, o)


def from_keras_conv_lstm(keras_layer):
    """A built Keras ``ConvLSTM1D/2D/3D`` -> ``(cell, params)``: kernel ->
    ``k_ih``, recurrent_kernel -> ``k_hh``, bias -> ``b`` (``bias="single"``,
    or "none" without a bias). It must use "same" padding, strides and
    dilation 1, channels last and the default activations (an error names
    the option otherwise)."""
    name = type(keras_layer).__name__
    if not name.startswith("ConvLSTM"):
        raise ValueError(f"keras_layer: expected a ConvLSTM1D/2D/3D, got {name}")
    config = keras_layer.get_config()
    spatial = int(name[len("ConvLSTM")])
    expected = {
        "padding": "same",
        "strides": (1,) * spatial,
        "dilation_rate": (1,) * spatial,
        "data_format": "channels_last",
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    }
    for key, want in expected.items():
        got = config.get(key, want)
        got = tuple(got) if isinstance(got, list) else got
        if got != want and not (key == "data_format" and got is None):
            raise ValueError(f"keras_layer: {name}'s {key} must be {want!r} here, got {got!r}")
    cell = keras_layer.cell
    params = {
        "k_ih": np.asarray(cell.kernel),
        "k_hh": np.asarray(cell.recurrent_kernel),
    }
    bias = "single" if config.get("use_bias", True) else "none"
    if bias == "single":
        params["b"] = np.asarray(cell.bias)
    features = params["k_hh"].shape[-2]
    return conv_lstm(features, params["k_ih"].shape[:-2], bias=bias), params


def from_flax_conv_lstm(params, cell=None):
    """Flax linen ``ConvLSTMCell`` params (``{"ih": {kernel, bias}, "hh":
    {...}}``, or wrapped in ``{"params": ...}``) -> ``(cell, params)`` with
    ``bias="double"``. ``cell``, the Flax module, is checked for "SAME"
    padding and strides 1 when given. Flax's carry is ``(c, h)``, ours
    ``LSTMCarry(h, c)``."""
    params = params.get("params", params)
    if set(params) != {"ih", "hh"}:
        raise ValueError(f"params: expected a ConvLSTMCell's 'ih' and 'hh', got {sorted(params)}")
    if cell is not None:
        strides = cell.strides or 1
        ones = strides == 1 or all(s == 1 for s in np.atleast_1d(strides))
        if str(cell.padding).upper() != "SAME" or not ones:
            raise ValueError(
                f"cell: expected padding 'SAME' and strides 1, got {cell.padding!r}, {strides!r}"
            )
    ih, hh = params["ih"], params["hh"]
    kernel_ih = _reorder(ih["kernel"])
    features = kernel_ih.shape[-1] // 4
    ours = {"k_ih": kernel_ih, "k_hh": _reorder(hh["kernel"])}
    if "bias" in ih:
        shift = np.zeros(4 * features, kernel_ih.dtype)
        shift[features : 2 * features] = 1.0  # Flax's sigmoid(f + 1)
        ours |= {"b_ih": _reorder(ih["bias"]) + shift, "b_hh": _reorder(hh["bias"])}
        bias = "double"
    else:
        ours["b"] = np.zeros(4 * features, kernel_ih.dtype)
        ours["b"][features : 2 * features] = 1.0
        bias = "single"
    return conv_lstm(features, kernel_ih.shape[:-2], bias=bias), ours


def _reorder(a) -> np.ndarray:
    blocks = np.split(np.asarray(a), 4, axis=-1)
    return np.concatenate([blocks[i] for i in FLAX_TO_OURS], axis=-1)
