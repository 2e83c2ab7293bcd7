"""Weight layouts of every peer, one small table each (source of truth:
``reference/conventions.md``). Gate letters are ours (LSTM i,f,g,o; GRU
r,z,n; Elman h), listed in the peer's order."""

from __future__ import annotations

from recurrent_jax.interop._layout import GATES, Layout, Slot, parts

# --- PyTorch nn.LSTM / GRU / RNN and their *Cell versions ------------------
# weight_ih (G*H, D) rows in our gate order, weight_hh (G*H, K), two biases,
# weight_hr (P, H). "{l}" is "_l0", "_l0_reverse", ... or "" for cells.


def _ra(family, reset_after):
    return reset_after if family == "gru" else None


TORCH_NAMES = {"lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU", "elman": "torch.nn.RNN"}


def torch_layout(family: str, *, bias: bool = True, proj: bool = False, name=None) -> Layout:
    g = GATES[family]
    slots = [
        Slot("weight_ih{l}", "kernel", parts(g, "ih"), transpose=True),
        Slot("weight_hh{l}", "kernel", parts(g, "hh"), transpose=True),
    ]
    if bias:
        slots += [
            Slot("bias_ih{l}", "bias", parts(g, "ih")),
            Slot("bias_hh{l}", "bias", parts(g, "hh")),
        ]
    if proj:
        slots.append(Slot("weight_hr{l}", "proj", transpose=True))
    why = "" if bias else "Build the module with bias=True to keep the biases."
    return Layout(
        name or TORCH_NAMES[family], family, tuple(slots), reset_after=_ra(family, True), why=why
    )


# --- Keras 3 LSTM / GRU / SimpleRNN (variables of layer.cell) --------------


def keras_layout(family: str, *, use_bias: bool = True, reset_after: bool = True) -> Layout:
    g = {"lstm": "ifgo", "gru": "rzn", "elman": "h"}[family]
    if family == "gru":
        g = "zrn"  # Keras blocks [z | r | h]
    slots = [
        Slot("kernel", "kernel", parts(g, "ih")),
        Slot("recurrent_kernel", "kernel", parts(g, "hh")),
    ]
    if use_bias and family == "gru" and reset_after:
        slots += [
            Slot("bias", "bias", parts(g, "ih"), row=0),
            Slot("bias", "bias", parts(g, "hh"), row=1),
        ]
    elif use_bias:
        slots.append(Slot("bias", "bias", parts(g, "sum")))
    name = {
        "lstm": "keras LSTM",
        "gru": f"keras GRU(reset_after={reset_after})",
        "elman": "keras SimpleRNN",
    }[family]
    why = "" if use_bias else "Build the Keras layer with use_bias=True to keep the biases."
    if family == "gru" and not reset_after:
        why = (
            "Keras GRU(reset_after=False) has one bias and computes "
            "n = tanh(x W_n + b_n + (r ⊙ h) W_hn)."
        )
    return Layout(name, family, tuple(slots), reset_after=_ra(family, reset_after), why=why)


# --- Flax linen cells (params of LSTMCell / OptimizedLSTMCell, GRUCell,
# SimpleCell) and Flax NNX cells (nnx.state(cell, nnx.Param)) --------------


def _per_gate_lstm(input_name) -> tuple:
    slots = []
    for g in "ifgo":
        slots += [
            Slot(f"{input_name(g)}/kernel", "kernel", ((g, "ih"),)),
            Slot(f"h{g}/kernel", "kernel", ((g, "hh"),)),
            Slot(f"h{g}/bias", "bias", ((g, "sum"),)),
        ]
    return tuple(slots)


FLAX_LINEN = {
    "lstm": Layout("flax.linen.LSTMCell", "lstm", _per_gate_lstm(lambda g: f"i{g}")),
    "gru": Layout(
        "flax.linen.GRUCell",
        "gru",
        (
            Slot("ir/kernel", "kernel", (("r", "ih"),)),
            Slot("ir/bias", "bias", (("r", "sum"),)),
            Slot("iz/kernel", "kernel", (("z", "ih"),)),
            Slot("iz/bias", "bias", (("z", "sum"),)),
            Slot("in/kernel", "kernel", (("n", "ih"),)),
            Slot("in/bias", "bias", (("n", "ih"),)),
            Slot("hr/kernel", "kernel", (("r", "hh"),)),
            Slot("hz/kernel", "kernel", (("z", "hh"),)),
            Slot("hn/kernel", "kernel", (("n", "hh"),)),
            Slot("hn/bias", "bias", (("n", "hh"),)),
        ),
        reset_after=True,
        why="flax.linen.GRUCell is reset-after (n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))).",
    ),
    "elman": Layout(
        "flax.linen.SimpleCell",
        "elman",
        (
            Slot("i/kernel", "kernel", (("h", "ih"),)),
            Slot("i/bias", "bias", (("h", "sum"),)),
            Slot("h/kernel", "kernel", (("h", "hh"),)),
        ),
    ),
}

_FUSED_INPUT = (Slot("dense_i/kernel", "kernel", parts("ifgo", "ih")),)
FLAX_NNX = {
    "LSTMCell": Layout(
        "flax.nnx.LSTMCell", "lstm", _per_gate_lstm(lambda g: "if_" if g == "f" else f"i{g}")
    ),
    "OptimizedLSTMCell": Layout(
        "flax.nnx.OptimizedLSTMCell",
        "lstm",
        _FUSED_INPUT
        + (
            Slot("dense_h/kernel", "kernel", parts("ifgo", "hh")),
            Slot("dense_h/bias", "bias", parts("ifgo", "sum")),
        ),
    ),
    "GRUCell": Layout(
        "flax.nnx.GRUCell",
        "gru",
        (
            Slot("dense_i/kernel", "kernel", parts("rzn", "ih")),
            Slot("dense_i/bias", "bias", (("r", "sum"), ("z", "sum"), ("n", "ih"))),
            Slot("dense_h/kernel", "kernel", parts("rzn", "hh")),
        ),
        reset_after=True,
        why=(
            "flax.nnx.GRUCell computes n = tanh(x W_in + b_in + r ⊙ (h W_hn)) with no "
            "recurrent bias b_hn (flax issue 5594); convert to flax.linen.GRUCell or "
            "Equinox GRUCell, which have that slot."
        ),
    ),
    "SimpleCell": Layout(
        "flax.nnx.SimpleCell",
        "elman",
        (
            Slot("dense_i/kernel", "kernel", (("h", "ih"),)),
            Slot("dense_i/bias", "bias", (("h", "sum"),)),
            Slot("dense_h/kernel", "kernel", (("h", "hh"),)),
        ),
    ),
}

# --- Equinox LSTMCell / GRUCell (PyTorch-shaped weights, summed biases) ----

EQUINOX = {
    "lstm": Layout(
        "equinox.nn.LSTMCell",
        "lstm",
        (
            Slot("weight_ih", "kernel", parts("ifgo", "ih"), transpose=True),
            Slot("weight_hh", "kernel", parts("ifgo", "hh"), transpose=True),
            Slot("bias", "bias", parts("ifgo", "sum")),
        ),
    ),
    "gru": Layout(
        "equinox.nn.GRUCell",
        "gru",
        (
            Slot("weight_ih", "kernel", parts("rzn", "ih"), transpose=True),
            Slot("weight_hh", "kernel", parts("rzn", "hh"), transpose=True),
            Slot("bias", "bias", (("r", "sum"), ("z", "sum"), ("n", "ih"))),
            Slot("bias_n", "bias", (("n", "hh"),)),
        ),
        reset_after=True,
    ),
}


def equinox_layout(family: str, use_bias: bool) -> Layout:
    layout = EQUINOX[family]
    if use_bias:
        return layout
    why = "The Equinox cell was built with use_bias=False."
    return layout._replace(slots=tuple(s for s in layout.slots if s.kind != "bias"), why=why)


# --- Haiku LSTM / GRU --------------------------------------------------------
# LSTM: one Linear over [x, h] with blocks (i, g, f, o), +1 on f in the forward
# pass. GRU: reset-before, blocks (z, r, n), h' = (1-z) h + z n: its z is our
# -z (σ(-a) = 1 - σ(a)).

HAIKU = {
    "lstm": Layout(
        "haiku.LSTM",
        "lstm",
        (
            Slot("linear/w", "kernel", parts("igfo", "ih|hh")),
            Slot("linear/b", "bias", parts("igfo", "sum")),
        ),
        offset={"f": 1.0},
    ),
    "gru": Layout(
        "haiku.GRU",
        "gru",
        (
            Slot("w_i", "kernel", parts("zrn", "ih")),
            Slot("w_h", "kernel", parts("zrn", "hh")),
            Slot("b", "bias", parts("zrn", "sum")),
        ),
        sign={"z": -1.0},
        reset_after=False,
        why=(
            "haiku.GRU is reset-before (n = tanh(x W_n + (r ⊙ h) W_hn + b_n)) with a "
            "flipped update gate; it matches rj.nn.GRU(reset_after=False) (Keras "
            "GRU(reset_after=False)), never PyTorch's or cuDNN's GRU."
        ),
    ),
}

# --- the flat cuDNN vector of jax.experimental.rnn --------------------------
# PyTorch layout per pseudo-layer (l0 fwd, l0 bwd, l1 fwd, ...): all weights
# W_ih.ravel(), W_hh.ravel() first, then all biases b_ih, b_hh.

CUDNN = torch_layout("lstm", name="jax.experimental.rnn (cuDNN) LSTM")
CUDNN_WEIGHTS = ("weight_ih{l}", "weight_hh{l}")
CUDNN_BIASES = ("bias_ih{l}", "bias_hh{l}")
