"""The traced hyperparameters, from one table.

Each row of ``TABLE`` names a float32 scalar that the compiled training
stages take as an argument rather than as a constant, so one program serves
every value and a sweep vmaps over it. Everything else about it is derived
here: the ``HParams`` field, the config path its value comes from
(``PATHS``), whether it is compiled in unless a sweep varies it, and what
the static config (the key of the compile cache) holds in its place.

Adding a traced hyperparameter is one row, plus its use in the stage that
owns it (the optimizer, the model's ``init`` or ``loss``).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import NamedTuple

import jax.numpy as jnp

from recurrent_jax.layers import RATES

FLAG = "flag"  # placeholder: 0.5 if the value is non-zero, else 0.0
KEEP = "keep"  # placeholder: the value itself (compiled in)


class HParam(NamedTuple):
    """One traced hyperparameter.

    ``placeholder``: what ``static_config`` puts at ``path``: a number (any
    value shares the program), ``FLAG`` (whether it is zero decides whether
    its regulariser or clip is compiled in) or ``KEEP``. ``compiled_in``:
    its ``HParams`` field is None (the config's value is a constant) unless
    a sweep varies it. ``zero_disables``: 0 turns the feature off, a static
    choice, so 0 and non-zero values cannot share a program.
    """

    name: str
    path: str
    placeholder: float | str
    compiled_in: bool = False
    zero_disables: bool = False


TABLE = (
    HParam("learning_rate", "optimizer.learning_rate", 1.0),
    HParam("weight_decay", "optimizer.weight_decay", FLAG),
    HParam("clip_norm", "optimizer.clip_norm", FLAG, zero_disables=True),
    HParam("dropout", "model.dropout", FLAG),
    HParam("input_dropout", "model.input_dropout", FLAG),
    HParam("recurrent_dropout", "model.recurrent_dropout", FLAG),
    HParam("zoneout", "model.zoneout", FLAG),
    HParam("init_scale", "model.init_scale", 1.0),
    HParam("b1", "optimizer.b1", KEEP, compiled_in=True),
    HParam("b2", "optimizer.b2", KEEP, compiled_in=True),
    HParam("eps", "optimizer.eps", KEEP, compiled_in=True),
    HParam("momentum", "optimizer.momentum", KEEP, compiled_in=True),
    HParam("forget_bias", "model.forget_bias", 1.0),
    HParam("sampling_prob", "model.sampling_prob", FLAG),
)
BY_NAME = {row.name: row for row in TABLE}
PATHS = {row.name: row.path for row in TABLE}  # field -> "section.field"


Rates = collections.namedtuple("Rates", RATES, defaults=(0.0,) * len(RATES))
Rates.__doc__ = """The stack's regulariser rates (floats or traced scalars,
``layers.RATES``); 0.0 is compiled out."""


_Fields = collections.namedtuple(
    "HParams", [row.name for row in TABLE], defaults=(None,) * len(TABLE)
)


class HParams(_Fields):
    """Traced float32 scalars, one field per row of ``TABLE``; a sweep vmaps
    over any of them. A field is None where its config value is compiled in
    (``b1``, ``b2``, ``eps`` unless swept) or where the model has no such
    hyperparameter (``sampling_prob`` of an RNN model, ``dropout`` of a
    seq2seq model)."""

    __slots__ = ()

    @property
    def rates(self) -> Rates:
        return Rates(*(getattr(self, name) for name in Rates._fields))


def config_value(config, path: str, default=None):
    """``config.<section>.<field>`` by its dotted path; ``default`` where the
    section has no such field (a hyperparameter of another model kind)."""
    section, field = path.split(".")
    return getattr(getattr(config, section), field, default)


def applies(config, name: str) -> bool:
    """Whether the config's sections have the field of hyperparameter ``name``."""
    section, field = PATHS[name].split(".")
    return field in {f.name for f in dataclasses.fields(getattr(config, section))}


def default_hparams(config, traced=()) -> HParams:
    """The config's values as float32 scalars; None for a hyperparameter the
    model does not have, and for a ``compiled_in`` one not named in ``traced``."""
    values = {
        row.name: jnp.asarray(config_value(config, row.path), jnp.float32)
        if applies(config, row.name) and (not row.compiled_in or row.name in traced)
        else None
        for row in TABLE
    }
    return HParams(**values)


def with_placeholders(config):
    """``config`` with every applicable hyperparameter at its placeholder."""
    sections = {}
    for row in TABLE:
        if row.placeholder == KEEP or not applies(config, row.name):
            continue
        section, field = row.path.split(".")
        value = config_value(config, row.path)
        placeholder = (0.5 if value else 0.0) if row.placeholder == FLAG else row.placeholder
        sections.setdefault(section, {})[field] = placeholder
    return dataclasses.replace(
        config,
        **{s: dataclasses.replace(getattr(config, s), **f) for s, f in sections.items()},
    )
