"""A ported rj.nn (linen) module and its params as an NNX or Equinox model.

The converters read a peer into an rj.nn module description and the pure
core's params; ``api="nnx"`` / ``"eqx"`` rebuild the same description at
that door (``recurrent_jax.doors``: same option names) and load the params,
so every door computes the same function with the same weights.
"""

from __future__ import annotations

import jax

from recurrent_jax import doors, nn

APIS = ("linen", "nnx", "eqx")


def with_api(api: str, module, params):
    """``(module, params)`` for "linen"; the NNX or Equinox model holding
    ``params`` for "nnx" / "eqx"."""
    if api not in APIS:
        raise ValueError(f"api: expected one of {list(APIS)}, got {api!r}")
    if api == "linen":
        return module, params
    kind, args, options = _describe(module)
    in_features = _input_size(params)
    if api == "nnx":
        from flax import nnx as flax_nnx

        from recurrent_jax import nnx

        if options["deterministic"] is None:
            options["deterministic"] = False
        model = getattr(nnx, kind)(*args(in_features), rngs=flax_nnx.Rngs(0), **options)
        return nnx.load_params(model, params)
    from recurrent_jax import eqx

    inference = bool(options.pop("deterministic"))
    model = getattr(eqx, kind)(
        *args(in_features), key=jax.random.PRNGKey(0), inference=inference, **options
    )
    return eqx.load_params(model, params)


def _describe(module):
    """(class name, positional args given the input size, options) of a
    linen module, in the shape every door's constructor takes."""
    if isinstance(module, nn.RNN):
        options = _read(module, doors.LAYER, doors.OUTPUT) | {"reverse": module.reverse}
        return "RNN", lambda d: (module.cell, d), options
    if isinstance(module, nn.Bidirectional):
        options = _read(module, doors.LAYER, doors.OUTPUT) | {"merge_mode": module.merge_mode}
        return "Bidirectional", lambda d: (module.forward, d, module.backward), options
    family = type(module).__name__
    if family not in doors.FAMILIES:
        raise ValueError(f"module: expected an rj.nn module, got {type(module).__name__}")
    options = _read(module, doors.stacked_options(family))
    return family, lambda d: (d, module.hidden_size), options


def _read(module, *tables) -> dict:
    return {k: getattr(module, k) for table in tables for k in table}


def _input_size(params) -> int:
    """D of the first layer's ``w_ih`` (D, G·H)."""
    for path, leaf in sorted(
        jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])
    ):
        if jax.tree_util.keystr(path[-1:]) == "['w_ih']":
            return leaf.shape[0]
    raise ValueError("params: no input weights `w_ih` to read the input size from")
