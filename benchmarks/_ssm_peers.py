"""The same state-space models from ``memorax`` and ``linax``, for
``ssm_speed.py``: each builder takes the shape (B, T, H, N) and returns
``(params, forward)`` with ``forward(params, xs (B, T, H)) -> ys (B, T, H)``,
or raises ImportError when its package is not installed (neither is a
dependency of recurrent_jax: they live in the benchmark's own environment).

Sizes are matched on the state each row stores: N real numbers per channel
for ``s4d`` (N/2 complex modes), N complex states in all for ``lru``, N/2
complex for ``s5`` (whose conjugate pairs recurrent_jax and linax keep once,
memorax keeps none: its S5 gets N/2 states), N oscillators for ``linoss``,
and H·N for the selective SSM. Both packages run every model with
``jax.lax.associative_scan`` (linax's S4D as an FFT convolution), on
complex64 states.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def memorax_model(cell, shape):
    """A memorax ``Memoroid`` around ``cell`` (a linen module), no resets."""
    from memorax.networks.sequence_models import Memoroid

    batch, steps, features, _ = shape
    module = Memoroid(cell=cell)
    no_resets = jnp.zeros((batch, steps))
    xs = jnp.zeros((batch, steps, features))
    params = module.init(jax.random.PRNGKey(0), xs, no_resets)
    return params, lambda p, x: module.apply(p, x, no_resets)[1]


def memorax_s5(shape):
    from memorax.networks.sequence_models import S5Cell

    return memorax_model(S5Cell(features=shape[2], state_size=shape[3] // 2), shape)


def memorax_lru(shape):
    from memorax.networks.sequence_models import LRUCell

    return memorax_model(LRUCell(features=shape[2], hidden_dim=shape[3]), shape)


def memorax_mamba(shape):
    """memorax's ``MambaCell``: H channels in heads of 16 with N states each
    (H·N numbers a row, as ``s6``), its in- and out-projections and gate. Its
    decay is one scalar per head and step (Mamba-2's), not one per channel
    and state as in Mamba's S6, so its coefficients cost less."""
    from memorax.networks.sequence_models import MambaCell

    features, state = shape[2], shape[3]
    heads = max(1, features // 16)
    cell = MambaCell(
        features=features, num_heads=heads, head_dim=features // heads, hidden_dim=state
    )
    return memorax_model(cell, shape)


def linax_model(mixer_config, shape):
    """A linax sequence mixer (an Equinox module over one (T, H) sequence),
    vmapped over the batch; its params are its inexact arrays."""
    import equinox as eqx

    mixer = mixer_config.build(shape[2], jax.random.PRNGKey(0))
    params, static = eqx.partition(mixer, eqx.is_inexact_array)

    def forward(p, xs):
        model = eqx.combine(p, static)
        return jax.vmap(lambda x: model(x, None))(xs)

    return params, forward


def linax_s5(shape):
    from linax.sequence_mixers import S5SequenceMixerConfig

    return linax_model(S5SequenceMixerConfig(state_dim=shape[3]), shape)


def linax_s4d(shape):
    from linax.sequence_mixers import S4DSequenceMixerConfig

    return linax_model(S4DSequenceMixerConfig(state_dim=shape[3]), shape)


def linax_lru(shape):
    from linax.sequence_mixers import LRUSequenceMixerConfig

    return linax_model(LRUSequenceMixerConfig(state_dim=shape[3]), shape)


def linax_linoss(shape):
    from linax.sequence_mixers import LinOSSSequenceMixerConfig

    config = LinOSSSequenceMixerConfig(state_dim=shape[3], discretization="IM", damping=False)
    return linax_model(config, shape)


# recurrent_jax cell name -> {peer row name: builder}
PEERS = {
    "s5": {"memorax S5Cell": memorax_s5, "linax S5": linax_s5},
    "s4d": {"linax S4D (FFT)": linax_s4d},
    "s6": {"memorax MambaCell": memorax_mamba},
    "linoss": {"linax LinOSS-IM": linax_linoss},
    "lru": {"memorax LRUCell": memorax_lru, "linax LRU": linax_lru},
}


def versions() -> dict:
    """The installed version of each peer package (None: not installed)."""
    from importlib import metadata

    found = {}
    for name in ("memorax", "linax", "flax", "equinox"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
