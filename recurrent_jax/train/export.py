"""A trained run's inference function as a file: ``run.export(path)``.

The function of ``run.predict`` on arrays — raw inputs encoded with the
training statistics, the model, per-step predictions cut to each length —
with the params inside, serialised with ``jax.export``: loading it needs
JAX alone, not recurrent_jax, the config or the data::

    exported = jax.export.deserialize(open("model.jax", "rb").read())
    predictions = exported.call(x, lengths)   # x float32 (N, T, D) or int32 ids (N, T)

The batch and the length are symbolic (any N and T) unless fixed by
``batch_size`` and ``num_steps``. The recurrence runs on a backend that
XLA lowers by itself (``scan`` where the run's config asks for a kernel
of the package's own: the C++ CPU backend, Pallas, cuDNN), so the file
holds no custom call.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import export as jax_export

from recurrent_jax.data.base import MissingExtraError
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.train.config import ConfigError
from recurrent_jax.train.models import make_model
from recurrent_jax.train.predict import inference

KERNELS = ("auto", "cpu", "cudnn", "pallas", "pallas_tpu")  # may lower to custom calls


def export(
    run, path, *, batch_size: int | None = None, num_steps: int | None = None, platforms=None
) -> Path:
    """Writes the inference function of ``run`` (an ``rnn`` run) to
    ``path`` and returns the path: ``(x, lengths) -> predictions``, ``x``
    raw inputs as ``run.predict`` takes them (float32 (N, T, D) features
    or int32 (N, T) ids), ``lengths`` int32 (N,), predictions the named
    arrays of ``run.predict`` (less ``lengths``). ``batch_size``,
    ``num_steps``: fixed N and T (None: symbolic); ``platforms``: those of
    ``jax.export`` (default the current one)."""
    if run.task.kind == SEQ2SEQ:
        raise ConfigError(
            "export: expected a run of the rnn model kind; a seq2seq run decodes in a loop "
            "of its own (use run.as_nn() and its decode)"
        )
    model = run.config.model
    if model.engine.impl in KERNELS:
        engine = dataclasses.replace(model.engine, impl="scan")
        model = dataclasses.replace(model, engine=engine)
    infer = inference(run, make_model(model, run.task))
    hparams, params = run.hparams, run.params
    function = jax.jit(lambda x, lengths: infer(hparams, params, x, lengths))
    x_spec, lengths_spec = input_specs(run, batch_size, num_steps)
    try:
        exported = jax_export.export(function, platforms=platforms)(x_spec, lengths_spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"export: this run's model cannot be exported with a symbolic batch or length "
            f"({str(error).splitlines()[0][:200]}); pass batch_size= and num_steps="
        ) from None
    try:
        serialized = exported.serialize()
    except ImportError:  # jax serialises with flatbuffers, an optional package of its own
        raise MissingExtraError(
            "export: serialising needs flatbuffers: pip install 'recurrent-jax[experiments]'"
        ) from None
    path = Path(path)
    path.write_bytes(serialized)
    return path


def input_specs(run, batch_size: int | None, num_steps: int | None):
    """``jax.ShapeDtypeStruct``s of ``(x, lengths)``: ids (N, T) for a
    task read as token ids, else features (N, T, *spatial, D)."""
    symbols = jax_export.symbolic_shape("n, t")
    n = symbols[0] if batch_size is None else batch_size
    t = symbols[1] if num_steps is None else num_steps
    task = run.task
    tokens = task.input_vocab is not None or (task.inputs and task.inputs.tokenize)
    if tokens:
        x = jax.ShapeDtypeStruct((n, t), jnp.int32)
    else:
        x = jax.ShapeDtypeStruct((n, t, *task.spatial_shape, task.input_size), jnp.float32)
    return x, jax.ShapeDtypeStruct((n,), jnp.int32)


def load(path):
    """The exported function of ``path`` (``jax.export.deserialize``):
    call it as ``load(path).call(x, lengths)``."""
    return jax_export.deserialize(Path(path).read_bytes())
