"""A trained run as a value: ``load_run(workdir) -> LoadedRun``.

A ``LoadedRun`` holds what a run is — its experiment config, its task
(built as the run built it: the same files, vocabulary and training
statistics), the ``Model`` of the config on that task and the trained
params — and everything after training is a function of it::

    run = rj.train.load_run("runs/mine")          # the best checkpoint
    run.predict(x_new)                            # {"classes", "probabilities"}
    run.sample("To be", length=100)               # a language model's continuation
    run.states(x_new)                             # every layer's carries and gates
    run.export("model.jax")                       # jax.export, no config needed
    module = run.as_nn()                          # the network as a flax.linen module

Loading goes through the checks of every command that reads a run
directory (``rundir.check``): a directory of another kind, or one without
a marker, is refused in one line, and code the run names outside the
package is imported only with ``trust_code=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from recurrent_jax.data.base import TaskSpec
from recurrent_jax.train.config import ExperimentConfig
from recurrent_jax.train.eval_run import restore_run
from recurrent_jax.train.hparams import HParams
from recurrent_jax.train.runs import first
from recurrent_jax.train.stages import Model


class LoadedRun(NamedTuple):
    """A trained run: config, task, model and params (see the module
    docstring).

    Attributes:
      config: the run's ``ExperimentConfig``.
      task: its ``TaskSpec``, built from the config's data as the run built it.
      model: the ``Model`` (pure stages) of ``config.model`` on ``task``.
      params: the trained params (the model's ``init`` structure).
      hparams: the traced hyperparameters the run trained with.
      step: the step of the checkpoint the params come from.
      workdir: the run directory, or None for a run trained in memory
        (``fit`` without a ``workdir``).
      metrics: the held-out metrics of a run trained in memory at its end
        (``fit``), else None (a run directory holds them).
    """

    config: ExperimentConfig
    task: TaskSpec
    model: Model
    params: Any
    hparams: HParams
    step: int
    workdir: Path | None = None
    metrics: dict | None = None

    def predict(self, xs, seq_lengths=None, **options) -> dict:
        """Named predictions for new inputs: ``train.predict.predict``."""
        from recurrent_jax.train import predict

        return predict.predict(self, xs, seq_lengths, **options)

    def sample(self, prompt: str, length: int = 200, **options) -> str:
        """A language model's continuation of ``prompt``:
        ``train.predict.sample``."""
        from recurrent_jax.train import predict

        return predict.sample(self, prompt, length, **options)

    def states(self, xs, seq_lengths=None) -> dict:
        """Every layer's per-step carry and gates: ``train.probe.states``."""
        from recurrent_jax.train import probe

        return probe.states(self, xs, seq_lengths)

    def export(self, path, **options) -> Path:
        """The inference function, serialised: ``train.export.export``."""
        from recurrent_jax.train import export

        return export.export(self, path, **options)

    def as_nn(self):
        """The network as a flax.linen module bound to the params
        (``train.run_modules.as_nn``)."""
        from recurrent_jax.train import run_modules

        return run_modules.as_nn(self)

    def as_nnx(self):
        """The network as a Flax NNX module holding the params
        (``train.run_modules.as_nnx``)."""
        from recurrent_jax.train import run_modules

        return run_modules.as_nnx(self)

    def as_eqx(self):
        """The network as an Equinox module holding the params
        (``train.run_modules.as_eqx``)."""
        from recurrent_jax.train import run_modules

        return run_modules.as_eqx(self)


def load_run(
    workdir, run: int | None = None, step: str | int = "best", *, trust_code: bool = False
) -> LoadedRun:
    """Run ``run`` of ``workdir`` at its checkpoint ``step``: "best" (the
    state at its best held-out score), "latest" or a saved step number.

    ``workdir``: a ``train`` run or a sweep's ``best_run/`` (``run`` None),
    or a sweep (``run``: the run id). The code the run's config names
    outside the package (``data.task``, ``model.cell`` by import path) is
    imported only with ``trust_code``. A directory that is not a run
    directory a command may read, a missing checkpoint or a checkpoint that
    does not match the config is a one-line error; nothing is written
    (``eval_run.restore_run``, the reader of every command).
    """
    saved = restore_run(workdir, run, step, trust_code=trust_code, command="predict")
    setup = saved.program.setup
    hparams = first(saved.hparams)
    return LoadedRun(
        saved.config, setup.task, setup.model, saved.params, hparams, saved.step, Path(workdir)
    )


__all__ = ["LoadedRun", "load_run"]
