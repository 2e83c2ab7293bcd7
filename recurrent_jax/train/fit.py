"""Training on arrays already in memory: ``fit(config, x, y) -> LoadedRun``.

The ``arrays`` task without its file: the same checks, split, statistics
and model as a run of ``data.task="arrays"`` on a file holding ``x``,
``y`` and ``lengths``. Without a ``workdir`` the whole run is one
compiled call (``make_train``) and nothing is written; with one, the
arrays are saved in it (``data/train.npz``, ``data/eval.npz``) and it
trains as ``recurrent-jax train`` would, so the directory resumes,
evaluates, predicts and loads like any other run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from recurrent_jax.data import readers
from recurrent_jax.data.arrays import arrays_task, save_arrays
from recurrent_jax.data.files import NAMES
from recurrent_jax.train import core, rundir
from recurrent_jax.train.config import ConfigError, ExperimentConfig, from_config_dict
from recurrent_jax.train.loaded import LoadedRun, load_run
from recurrent_jax.train.loop import train_and_evaluate
from recurrent_jax.train.models import make_model

DATA_DIR = "data"  # in a run directory: the arrays ``fit`` trained on


def fit(config, x, y, lengths=None, eval=None, *, workdir=None, progress: bool = True) -> LoadedRun:
    """Trains the model of ``config`` (an ``ExperimentConfig`` or config
    dict of the ``arrays`` task) on ``x``, ``y`` and ``lengths`` as the
    arrays task reads them from a file (float (N, T, D) features or int
    (N, T) ids; int (N,) / (N, T) classes or float (N, C) / (N, T, C)
    targets), holding out ``eval`` = ``(x, y)`` or ``(x, y, lengths)``, else
    ``data.valid_fraction`` of the rows. Returns the trained run: its final
    params and ``metrics`` without a ``workdir``; with one, the run
    directory's best checkpoint (``load_run``), resumed if it was there.
    """
    config = config if isinstance(config, ExperimentConfig) else from_config_dict(config)
    if config.data.task != "arrays":
        raise ConfigError(
            f"config.data.task: expected 'arrays' to fit arrays in memory, got {config.data.task!r}"
        )
    for key in ("path", "eval_path"):  # never silently replaced by the arrays given
        if getattr(config.data.options, key):
            given = getattr(config.data.options, key)
            raise ConfigError(
                f"config.data.{key}: expected '' to fit arrays in memory, got {given!r}"
            )
    if workdir is not None:
        return _fit_in(config, Path(workdir), (x, y, lengths), eval, progress)
    task = arrays_task(config.data.options, x, y, lengths, eval)
    hparams, key = core.default_hparams(config), jax.random.key(config.training.seed)
    state, metrics = jax.jit(core.make_train(config, task))(hparams, key)
    evaluated = {k: float(v) for k, v in jax.device_get(metrics["eval"]).items()}
    model = make_model(config.model, task)
    params = jax.device_get(state.params)
    return LoadedRun(config, task, model, params, hparams, int(state.step), None, metrics=evaluated)


def _fit_in(config: ExperimentConfig, workdir: Path, data, eval, progress) -> LoadedRun:
    """Saves the arrays in ``workdir`` (a new folder or this run's), then
    trains there and loads the best checkpoint."""
    rundir.check(workdir, "train")
    rundir.mark(rundir.make_workdir(workdir), rundir.TRAIN, name=config.name)
    paths = {"path": workdir / DATA_DIR / "train.npz"}
    if eval is not None:
        paths["eval_path"] = workdir / DATA_DIR / "eval.npz"
    with rundir.locked(workdir):
        for (key, path), arrays in zip(paths.items(), (data, _triple(eval)), strict=False):
            _save_or_match(path, arrays, key)
    options = dataclasses.replace(config.data.options, **{k: str(p) for k, p in paths.items()})
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, options=options))
    train_and_evaluate(config, workdir, progress=progress)
    return load_run(workdir, trust_code=True)  # the code it names: this process's own config


def _triple(eval) -> tuple | None:
    if eval is None:
        return None
    return (*eval, None) if len(eval) == 2 else tuple(eval)


def _save_or_match(path: Path, arrays: tuple, key: str) -> None:
    """Writes ``arrays`` (x, y, lengths) to ``path``, or checks that the
    file there holds them (a resumed run trains on the same data)."""
    given = {n: np.asarray(a) for n, a in zip(NAMES, arrays, strict=True) if a is not None}
    if readers.exists(path):
        saved = readers.read_npz(path, "--workdir", NAMES, readers.Budget(readers.MAX_GIB))
        same = saved.keys() == given.keys() and all(
            np.array_equal(saved[n], given[n]) for n in given
        )
        if not same:
            raise ConfigError(
                f"--workdir: {path.parent.parent} holds a run trained on other arrays "
                f"(data.{key} {str(path)!r} differs); pass another workdir"
            )
        return
    path.parent.mkdir(exist_ok=True)
    save_arrays(path, *arrays)
