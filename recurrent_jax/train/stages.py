"""The value a model family is: ``Model``, its pure stages and host hooks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


class RunEnd(NamedTuple):
    """What a finished run hands its model family for the final outputs."""

    workdir: Path
    title: str
    step: int
    params: Any
    eval_batch: Any  # host copy of the held-out batch
    eval_outputs: Any  # the last evaluation's outputs (host), or None
    diverged: bool


class Model(NamedTuple):
    """One model family's stages for a config and a task.

    Pure (traced and jitted by the callers; ``hparams`` an ``HParams``):
      init: ``init(hparams, key) -> params``.
      loss: ``loss(hparams, params, batch, key, step) -> (loss, metrics)``,
        ``key`` the regularisers' randomness, ``step`` the update's index.
      evaluate: ``evaluate(hparams, params, batch) -> (metrics, outputs)``
        of deterministic outputs; ``metrics`` are scalars.
      predict: ``predict(hparams, params, batch, **options) -> outputs``,
        a dict of named arrays for the inputs of ``batch`` (its targets
        are not read): the model's predictions, deterministic (options:
        the family's, such as a seq2seq decoder's).
    Host side:
      write_eval: ``write_eval(workdir, step, batch, outputs)`` after each
        evaluation of a run (``batch``, ``outputs`` on the host).
      write_final: ``write_final(end: RunEnd) -> (plots, samples)`` at the
        end of a run: the relative paths of the plots and the samples file
        (or None) it wrote.
    """

    init: Callable
    loss: Callable
    evaluate: Callable
    predict: Callable
    write_eval: Callable
    write_final: Callable


def bind(family, model_config, task) -> Model:
    """The ``Model`` of a family module: each field is the family's function
    of that name with ``(model_config, task)`` bound first, so the family
    defines ``init(model_config, task, hparams, key)`` and so on."""
    return Model(
        *(functools.partial(getattr(family, name), model_config, task) for name in Model._fields)
    )
