"""The one conversion engine: a peer's weight layout as data, two generic maps.

A ``Layout`` lists the arrays ("slots") a peer stores for one cell (one layer,
one direction). Each slot is built from gate blocks of the core params:

    core cell params (rj)                          peer slot
    w_ih (D, G*H), w_hh (K, G*H)    --blocks-->    concat of (gate, term) blocks
    b_ih / b_hh (G*H,) or b                        in the peer's gate order,
    w_hr (H, P)                                    signs, offsets, transpose

``to_peer`` and ``from_peer`` read the same table, so every converter is a
table (see ``_tables.py``), never a hand-written function per pair. Arrays are
NumPy here; conversions are transposes, block reorders, sign flips, bias sums
and splits, and constant offsets, all exact in floating point for a round trip
peer -> rj -> peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "elman": ("h",)}
GATE_NAMES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "cell candidate g",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate n",
    "h": "hidden unit",
}
KERNEL_TERMS = ("ih", "hh", "ih|hh")
BIAS_TERMS = ("ih", "hh", "sum")
CORE_KEYS = ("w_ih", "w_hh", "w_hr", "b", "b_ih", "b_hh")


class Slot(NamedTuple):
    """One array of the peer.

    Attributes:
      path: the array's key in the peer's flat dict ("/" joins nested keys);
        "{l}" is replaced by the layer/direction suffix of multi-layer peers.
      kind: "kernel", "bias" or "proj" (the LSTM projection ``w_hr``).
      parts: ``((gate, term), ...)`` in the peer's gate order, each block H
        wide. Kernel terms: "ih" (a block of ``w_ih``), "hh" (of ``w_hh``),
        "ih|hh" (the two stacked by rows, as Haiku's one Linear over [x, h]).
        Bias terms: "ih", "hh", "sum" (b_ih + b_hh, a peer with one bias).
      transpose: the peer stores (G*H, D), as PyTorch, not (D, G*H).
      row: the slot is row ``row`` of a stacked array (Keras GRU bias (2, 3H)).
    """

    path: str
    kind: str
    parts: tuple = ()
    transpose: bool = False
    row: int | None = None


class Layout(NamedTuple):
    """A peer's weights for one cell.

    Attributes:
      name: the peer, for messages ("torch.nn.GRU").
      family: "lstm", "gru" or "elman"; fixes the core gate order.
      slots: the arrays the peer stores.
      sign: ``{gate: -1.0}`` where the peer's pre-activation is the negative of
        ours (Haiku's update gate: h' = (1-z)h + z n).
      offset: ``{gate: c}`` constants the peer adds to a gate in its forward
        pass (Haiku's +1 forget bias): peer bias = sign*(b_ih + b_hh) - c.
      reset_after: the GRU variant the peer computes (None: not a GRU).
      why: what the peer cannot store, for the error when params need it.
    """

    name: str
    family: str
    slots: tuple
    sign: Mapping[str, float] = {}
    offset: Mapping[str, float] = {}
    reset_after: bool | None = None
    why: str = ""


def parts(gates, term) -> tuple:
    """``parts("ifgo", "ih") == (("i", "ih"), ("f", "ih"), ...)``."""
    return tuple((g, term) for g in gates)


def check_layout(layout: Layout) -> None:
    """A layout must name known kinds, terms and gates, and give every gate
    one input and one recurrent kernel block."""
    gates = GATES.get(layout.family)
    if gates is None:
        raise ValueError(f"layout: family must be one of {list(GATES)}, got {layout.family!r}")
    seen = {"ih": [], "hh": []}
    for slot in layout.slots:
        terms = {"kernel": KERNEL_TERMS, "bias": BIAS_TERMS, "proj": ()}.get(slot.kind)
        if terms is None or any(g not in gates or t not in terms for g, t in slot.parts):
            raise ValueError(f"layout: {layout.name} has an invalid slot {slot}")
        for g, t in slot.parts if slot.kind == "kernel" else ():
            for side in ("ih", "hh") if t == "ih|hh" else (t,):
                seen[side].append(g)
    for side, got in seen.items():
        if sorted(got) != sorted(gates):
            raise ValueError(
                f"layout: {layout.name} must give each of the gates {list(gates)} one "
                f"w_{side} block, gives {got}"
            )


# --- rj params <-> gate blocks ---------------------------------------------


def family_of(params: Mapping) -> str:
    """The family of one cell's params, "lstm", "gru" or "elman": w_ih holds
    4, 3 or 1 blocks of H columns, H the rows of w_hh (of w_hr with proj_size)."""
    hidden = np.shape(params["w_hr"] if "w_hr" in params else params["w_hh"])[0]
    width = np.shape(params["w_ih"])[-1]
    family = {4: "lstm", 3: "gru", 1: "elman"}.get(width // hidden if width % hidden == 0 else None)
    if family is None:
        raise ValueError(
            f"params: w_ih has {width} columns, not 4, 3 or 1 blocks of H={hidden} "
            "(an LSTM, GRU or Elman cell)"
        )
    return family


def split_gates(family: str, a) -> dict:
    gates = GATES[family]
    a = np.asarray(a)
    if a.shape[-1] % len(gates):
        raise ValueError(
            f"params: a {family} array's last axis must hold {len(gates)} gate "
            f"blocks, got shape {a.shape}"
        )
    return dict(zip(gates, np.split(a, len(gates), axis=-1), strict=True))


def blocks(family: str, params: Mapping, peer: str) -> dict:
    """Core cell params -> {"w_ih": {gate: (D, H)}, "w_hh", "b_ih", "b_hh"
    ({gate: (H,)} or None), "w_hr" ((H, P) or None)}. ``b`` counts as b_ih."""
    extra = sorted(set(params) - set(CORE_KEYS))
    if extra:
        raise ValueError(
            f"params: {peer} has no place for the rj params {extra}; it stores "
            f"only {sorted(k for k in CORE_KEYS if k in params)} of this cell"
        )
    for key in ("w_ih", "w_hh"):
        if key not in params:
            raise ValueError(
                f"params: expected a {family} cell's {key!r}, got keys {sorted(params)}"
            )
    if np.ndim(params["w_hh"]) == 3:
        raise ValueError(
            f"params: a multi-head cell's block-diagonal w_hh {np.shape(params['w_hh'])} "
            f"(heads, H/heads, G*H/heads) has no place in {peer}, which holds a dense one"
        )
    given = family_of(params)
    if given != family:
        raise ValueError(
            f"params: {peer} holds a cell of family {family!r}, the params are {given!r}"
        )
    out = {k: split_gates(family, params[k]) for k in ("w_ih", "w_hh")}
    bias_ih = params.get("b", params.get("b_ih"))
    out["b_ih"] = None if bias_ih is None else split_gates(family, bias_ih)
    out["b_hh"] = None if "b_hh" not in params else split_gates(family, params["b_hh"])
    out["w_hr"] = None if "w_hr" not in params else np.asarray(params["w_hr"])
    return out


# --- rj -> peer ------------------------------------------------------------


def to_peer(layout: Layout, params: Mapping, *, reset_after=None, suffix: str = "") -> dict:
    """Core cell params -> ``{path: np.ndarray}`` of the peer.

    ``reset_after`` is the GRU variant the params come from (None: assume
    the peer's). Raises ValueError when the params hold something the peer
    cannot store (a nonzero bias without a slot, a projection, the other
    GRU variant).
    """
    check_layout(layout)
    b = blocks(layout.family, params, layout.name)
    _check_variant(layout, reset_after)
    _check_representable(layout, b, reset_after)
    out, rows = {}, {}
    for slot in layout.slots:
        if slot.kind == "proj":
            value = b["w_hr"]
        else:
            value = np.concatenate(
                [_block(layout, b, slot.kind, g, t) for g, t in slot.parts], axis=-1
            )
        value = value.T if slot.transpose else value
        path = slot.path.format(l=suffix)
        if slot.row is None:
            out[path] = value
        else:
            rows.setdefault(path, {})[slot.row] = value
    for path, by_row in rows.items():
        out[path] = np.stack([by_row[i] for i in range(len(by_row))])
    return out


def _block(layout: Layout, b: dict, kind: str, gate: str, term: str) -> np.ndarray:
    s = layout.sign.get(gate, 1.0)
    if kind == "kernel":
        if term == "ih|hh":
            value = np.concatenate([b["w_ih"][gate], b["w_hh"][gate]], axis=0)
        else:
            value = b["w_" + term][gate]
        return value if s == 1.0 else s * value
    ih, hh = _bias_term(b, "b_ih", gate), _bias_term(b, "b_hh", gate)
    if term == "ih":
        return s * ih
    if term == "hh":
        return s * hh
    value, off = s * ih, layout.offset.get(gate, 0.0)
    if b["b_hh"] is not None:
        return value + (s * hh - off)  # exact when b_hh holds the offset
    return value - off if off else value


def _bias_term(b: dict, key: str, gate: str) -> np.ndarray:
    if b[key] is not None:
        return b[key][gate]
    return np.zeros_like(b["w_ih"][gate][0])


def _check_variant(layout: Layout, reset_after) -> None:
    if layout.reset_after is None or reset_after is None or reset_after == layout.reset_after:
        return
    mine = "after" if layout.reset_after else "before"
    theirs = "after" if reset_after else "before"
    raise ValueError(
        f"{layout.name} applies the GRU reset gate {mine} the recurrent matmul "
        f"(reset_after={layout.reset_after}); these params are from a GRU with "
        f"reset_after={reset_after} (reset {theirs}), whose outputs it cannot "
        f"reproduce. {layout.why}".rstrip()
    )


def _covered(layout: Layout, reset_after) -> set:
    """The (bias, gate) pieces the peer can hold. A summed slot holds b_ih +
    b_hh, except for a reset-after GRU's n gate where b_hn sits inside r ⊙ (.)."""
    variant = layout.reset_after if reset_after is None else reset_after
    inside_reset = layout.family == "gru" and variant is not False
    covered = set()
    for slot in layout.slots:
        if slot.kind != "bias":
            continue
        for gate, term in slot.parts:
            if term == "sum":
                covered.add(("b_ih", gate))
                if not (inside_reset and gate == "n"):
                    covered.add(("b_hh", gate))
            else:
                covered.add(("b_" + term, gate))
    return covered


def _check_representable(layout: Layout, b: dict, reset_after) -> None:
    if b["w_hr"] is not None and not any(s.kind == "proj" for s in layout.slots):
        raise ValueError(
            f"params: {layout.name} has no projection (proj_size), but the params "
            f"hold w_hr of shape {b['w_hr'].shape}"
        )
    covered = _covered(layout, reset_after)
    for key in ("b_ih", "b_hh"):
        for gate, value in (b[key] or {}).items():
            if (key, gate) not in covered and np.any(value != 0):
                where = (
                    "no bias at all"
                    if not covered
                    else f"no slot for {key} of the {GATE_NAMES[gate]}"
                )
                raise ValueError(
                    f"params: {layout.name} has {where}, but the params hold a nonzero "
                    f"{key}[{gate}] (max |value| {np.max(np.abs(value)):.3g}), which it "
                    f"cannot represent. {layout.why}".rstrip()
                )


# --- peer -> rj ------------------------------------------------------------


def from_peer(
    layout: Layout, arrays: Mapping, *, suffix: str = "", bias: str | None = None
) -> dict:
    """``{path: array}`` of the peer -> core cell params (NumPy).

    The bias mode is "none" without bias slots, "double" when the peer keeps
    b_hh apart (or needs it to hold an offset exactly), else "single"; pass
    ``bias`` to force one (a single bias must not need a separate b_hn).
    """
    fam = GATES[layout.family]
    w = {"w_ih": {}, "w_hh": {}, "b_ih": {}, "b_hh": {}, "w_hr": None}
    check_layout(layout)
    for slot in (s for s in layout.slots if s.kind == "proj"):  # first: it fixes K
        w["w_hr"] = _read(arrays, slot, suffix, layout)
    for slot in (s for s in layout.slots if s.kind != "proj"):
        value = _read(arrays, slot, suffix, layout)
        for (gate, term), blk in zip(
            slot.parts, np.split(value, len(slot.parts), axis=-1), strict=True
        ):
            _unblock(layout, w, slot.kind, gate, term, blk)
    params = {k: np.concatenate([w[k][g] for g in fam], axis=-1) for k in ("w_ih", "w_hh")}
    if w["w_hr"] is not None:
        params["w_hr"] = w["w_hr"]
    has_bias = any(s.kind == "bias" for s in layout.slots)
    params |= _bias_params(layout, w, has_bias, params["w_ih"], bias)
    return params


def _read(arrays, slot, suffix, layout) -> np.ndarray:
    path = slot.path.format(l=suffix)
    if path not in arrays:
        raise ValueError(f"{layout.name}: expected an array {path!r}, got keys {sorted(arrays)}")
    value = np.asarray(arrays[path])
    value = value if slot.row is None else value[slot.row]
    return value.T if slot.transpose else value


def _unblock(layout, w, kind, gate, term, blk) -> None:
    s = layout.sign.get(gate, 1.0)
    blk = blk if s == 1.0 else s * blk
    if kind == "kernel" and term == "ih|hh":
        k = blk.shape[-1] if w["w_hr"] is None else w["w_hr"].shape[-1]
        w["w_ih"][gate], w["w_hh"][gate] = blk[:-k], blk[-k:]
    elif kind == "kernel":
        w["w_" + term][gate] = blk
    elif term == "sum":
        w["b_ih"][gate] = blk
        off = layout.offset.get(gate, 0.0)
        if off:
            w["b_hh"][gate] = np.full_like(blk, s * off)
    else:
        w["b_" + term][gate] = blk


def _bias_params(layout, w, has_bias, w_ih, bias) -> dict:
    fam = GATES[layout.family]
    zeros = np.zeros(w_ih.shape[-1] // len(fam), w_ih.dtype)
    if not has_bias:
        full = np.zeros_like(w_ih[0])
        return {"single": {"b": full}, "double": {"b_ih": full, "b_hh": full}}.get(bias, {})
    b_ih = np.concatenate([w["b_ih"].get(g, zeros) for g in fam])
    b_hh = np.concatenate([w["b_hh"].get(g, zeros) for g in fam])
    mode = bias or ("double" if w["b_hh"] else "single")
    if mode == "double":
        return {"b_ih": b_ih, "b_hh": b_hh}
    if mode == "single":
        if not w["b_hh"]:
            return {"b": b_ih}
        if layout.family == "gru" and layout.reset_after and np.any(w["b_hh"].get("n", zeros) != 0):
            raise ValueError(
                f"bias: a single bias cannot hold {layout.name}'s nonzero b_hn (it "
                "sits inside r ⊙ (h W_hn + b_hn)); use bias='double'"
            )
        return {"b": b_ih + b_hh}
    raise ValueError(
        f"bias: {layout.name} has biases, so expected 'single' or 'double', got {bias!r}"
    )
