"""``config.model.cell_options``: keyword options of the cell's constructor.

A config may pass a cell its own options (``rj.cells.s4d(H, init="inv")``,
``my_cells:indrnn(H, init_u=0.9)``): ``cell_options = {"init": "inv"}``.
The names are checked against the constructor's signature
(``inspect.signature``, nothing called): a keyword parameter with a plain
default (None, bool, int, float, str or a tuple of them) is an option;
one the model section sets itself (``num_heads``, ``bias``,
``forget_bias``, ``param_dtype``, ...) or that takes a function is not,
and neither is a name only a ``**options`` would swallow: an option is
never silently ignored. The values are then tried by building the cell
once, so a bad value is an error naming ``cell_options`` before anything
trains.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

# Options the model section (or the model around the cell) sets: name -> what sets it.
OWNED = {
    "num_heads": "config.model.num_heads",
    "forget_bias": "config.model.forget_bias",
    "bias": "config.model.bias",
    "param_dtype": "config.model.dtype",
    "kernel_size": "config.model.kernel_size",
    "spatial_dims": "the task's frames",
    "engine": "config.model.engine",
    "time_major": "the model (batch-major)",
    "reverse": "config.model.bidirectional",
    "keep_order": "config.model.bidirectional",
}
_SCALARS = (type(None), bool, int, float, str)


class Options(dict):
    """A read-only, hashable dict (configs are values: hashed, compared)."""

    __slots__ = ()

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (Options, (dict(self),))

    def _read_only(self, *args, **kwargs):
        raise TypeError("cell_options: read-only; use dataclasses.replace on the model config")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only


def settable(make) -> list[str]:
    """The option names ``make`` takes from a config: its keyword
    parameters with a plain default, less those the model sets."""
    params = list(inspect.signature(make).parameters.values())[1:]  # after the size
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [
        p.name
        for p in params
        if p.kind in keyword
        and p.default is not inspect.Parameter.empty
        and p.name not in OWNED
        and isinstance(p.default, _SCALARS + (tuple,))
    ]
    return sorted(names)


def check(options, make, cell: str) -> Options:
    """``options`` as ``Options`` after checking its names against
    ``make``'s signature and its values' types; a ValueError naming
    ``cell_options`` otherwise."""
    if not isinstance(options, Mapping):
        raise ValueError(f"cell_options: expected a dict of option -> value, got {options!r}")
    names = settable(make)
    for name in options:
        if name in OWNED:
            raise ValueError(f"cell_options: {name!r} is set by {OWNED[name]}, not here")
        if name not in names:
            raise ValueError(
                f"cell_options: unknown option {name!r} of the {cell} cell; it takes {names} "
                "(its keyword parameters with a default)"
            )
    return Options({name: _value(name, value) for name, value in options.items()})


def _value(name: str, value):
    if isinstance(value, list | tuple) and all(isinstance(v, _SCALARS) for v in value):
        return tuple(value)
    if not isinstance(value, _SCALARS):
        raise ValueError(
            f"cell_options.{name}: expected None, a bool, int, float, str or a list of them, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def trial(make, hidden_size: int, options: Mapping) -> None:
    """Builds the cell once with ``options``: a bad value is a ValueError
    naming ``cell_options`` (the constructor's own message after it)."""
    try:
        make(hidden_size, **options)
    except (ValueError, TypeError) as error:
        raise ValueError(f"cell_options: {error}") from None
