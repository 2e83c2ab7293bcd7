"""Haiku LSTM and GRU cores (their params dicts)."""

from __future__ import annotations

from recurrent_jax.interop import _common, _layout, _tables
from recurrent_jax.interop._common import Spec

# The param names of each core under its module name ("lstm", "gru", ...).
KEYS = {"lstm": ("linear/w", "linear/b"), "gru": ("w_i", "w_h", "b")}


def from_haiku(params, name: str | None = None):
    """Haiku ``hk.LSTM`` / ``hk.GRU`` params -> ``(rj.nn.RNN(cell), params)``.

    ``params``: the dict from ``transform(...).init`` holding one such core
    (``name`` picks its module name, e.g. "lstm" or "encoder/~/gru", when
    there are several).

    - hk.LSTM: one Linear over [x, h], blocks (i, g, f, o), +1 on f in the
      forward pass -> ``bias="double"`` with ``b_ih`` = Haiku's b (reordered)
      and ``b_hh`` = 1 on the f block, so the round trip is exact.
    - hk.GRU: reset-before with a flipped update gate -> ``rj.cells.gru(H,
      reset_after=False, bias="single")`` with the z blocks negated.
    """
    prefix, family = _find(params, name)
    flat = {k[len(prefix) :]: v for k, v in _common.flatten(params).items() if k.startswith(prefix)}
    cell_params = _layout.from_peer(_tables.HAIKU[family], flat)
    bias = "double" if "b_hh" in cell_params else "single"
    hidden = cell_params["w_hh"].shape[0]
    spec = Spec(
        family, hidden, bias=bias, reset_after=False if family == "gru" else None, cell=True
    )
    return _common.make_module(spec), _common.to_jax(cell_params)


def to_haiku(
    params, haiku_params, *, name: str | None = None, layer=None, reset_after: bool | None = None
) -> dict:
    """rj cell params -> a copy of ``haiku_params`` (the target's init
    params, for its names and shapes) holding them.

    hk.GRU is reset-before: the params must come from a reset-before GRU,
    said by ``reset_after=False`` or ``layer=`` (rj's default GRU is
    reset-after, as PyTorch's, and hk.GRU cannot compute it: ValueError).
    """
    prefix, family = _find(haiku_params, name)
    cell_params = _common.single(params, _tables.HAIKU[family].name)
    _common.check_layer(layer, family, _tables.HAIKU[family].name)
    variant = _common.gru_variant(family, layer, reset_after)
    flat = _layout.to_peer(_tables.HAIKU[family], cell_params, reset_after=variant)
    out = _common.flatten(haiku_params)
    for key, value in flat.items():
        old = out[prefix + key]
        if tuple(old.shape) != value.shape:
            raise ValueError(
                f"params: Haiku {prefix + key} has shape {tuple(old.shape)}, "
                f"the params give {value.shape}"
            )
        out[prefix + key] = _common.to_jax(value).astype(old.dtype)
    return _unflatten_modules(out)


def _find(params, name):
    """The module prefix ("lstm/") and family of the one core in ``params``."""
    flat = _common.flatten(params)
    found = []
    for family, keys in KEYS.items():
        for k in flat:
            if k.endswith("/" + keys[0]):
                prefix = k[: -len(keys[0])]
                if all(prefix + other in flat for other in keys):
                    found.append((prefix, family))
    if name is not None:
        found = [f for f in found if f[0].rstrip("/") == name]
    if len(found) != 1:
        cores = [p.rstrip("/") for p, _ in found]
        raise ValueError(
            f"params: expected one Haiku LSTM or GRU core{f' named {name!r}' if name else ''}, "
            f"found {cores or 'none'}{'; pass name=' if len(found) > 1 else ''}"
        )
    return found[0]


def _unflatten_modules(flat: dict) -> dict:
    """Haiku's params are {module_name: {param: array}}; module names hold "/"."""
    out = {}
    for key, value in flat.items():
        module, _, param = key.rpartition("/")
        out.setdefault(module, {})[param] = value
    return out
