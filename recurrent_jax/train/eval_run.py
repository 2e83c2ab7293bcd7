"""The one reader of run directories: ``restore_run(workdir, run, step)``,
and ``recurrent-jax eval``.

Every run directory holds the same layout: checkpoints of a ``RunsState``
whose runs lie on a leading axis (1 for a training run, a mesh run and a
sweep's ``best_run/``; a grid point's runs in a sweep's
``checkpoints/point-<p>/``). ``restore_run`` reads run ``run`` of any of
them into the one-run program of its config; eval, decode, predict and
``load_run`` go through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax

from recurrent_jax.train import config_files, references, rundir, sweep_spec
from recurrent_jax.train.checkpoint import CheckpointError, checkpointer
from recurrent_jax.train.config import (
    ConfigError,
    ExperimentConfig,
    config_errors,
    from_config_dict,
)
from recurrent_jax.train.hparams import HParams
from recurrent_jax.train.runs import (
    Program,
    RunsState,
    compile_runs,
    first,
    stack_hparams,
    stack_keys,
)


class SavedRun(NamedTuple):
    """Run ``run`` of a run directory at checkpoint ``step``, in the one-run
    program of its config: ``hparams``, ``keys`` and ``state`` (its
    ``train`` the chosen state) have a run axis of 1."""

    config: ExperimentConfig
    program: Program
    hparams: HParams
    keys: jax.Array
    step: int
    state: RunsState

    @property
    def params(self):
        """The run's params, without the run axis."""
        return first(self.state.train.params)


def restore_run(
    workdir,
    run: int | None = None,
    step: str | int = "best",
    *,
    trust_code: bool = False,
    command: str = "eval",
) -> SavedRun:
    """Run ``run`` of ``workdir`` at checkpoint ``step``: "best" (the run's
    state at its best eval), "latest" or a saved step number.

    ``workdir``: a directory ``command`` reads (``rundir.check``): a
    training run or a sweep's ``best_run/`` (``run`` None or 0), or a sweep
    (``run``: its run id). The code its config names outside the package
    is imported from the files the run recorded, and only with
    ``trust_code`` (``references.admit_code``): loading a run runs it."""
    config, directory, index, size = _locate(Path(workdir), run, trust_code, command)
    program = compile_runs(config, 1)
    hparams, keys = stack_hparams([config]), stack_keys([config.training.seed])
    like = jax.eval_shape(program.init, hparams, keys)
    checkpoints = checkpointer(directory, program.setup.task, config.training.keep_checkpoints)
    try:
        chosen = choose_step(checkpoints, "latest" if step == "best" else step)
        state = _restore(checkpoints, chosen, like, index, size)
    finally:
        checkpoints.close()
    if step == "best" and bool(state.best.score[0] > -float("inf")):
        state = state._replace(train=state.best.state)  # the run's state at its best eval
        chosen = int(state.train.step[0])
    return SavedRun(config, program, hparams, keys, chosen, state)


def _locate(workdir: Path, run, trust_code: bool, command: str):
    """(config, checkpoint directory, index among its runs, runs there) of
    run ``run`` of ``workdir``."""
    kind = rundir.check(workdir, command)["kind"]
    path = workdir / rundir.KINDS[kind].config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved config; is {workdir} a run directory?")
    raw = config_files.read_json(path)
    with config_errors(""):
        references.admit_code(raw, source=f"the run in {workdir}", trust=trust_code, search=False)
    if kind != rundir.SWEEP:
        if run not in (None, 0):
            raise ConfigError(f"--run: expected none (or 0) for {workdir}, one run, got {run!r}")
        return from_config_dict(raw), workdir / "checkpoints", 0, 1
    plan = sweep_spec.parse_sweep(raw)
    if not (isinstance(run, int) and 0 <= run < len(plan.runs)):
        raise ConfigError(
            f"--run: expected a run id 0..{len(plan.runs) - 1} of the sweep in {workdir} "
            f"(its best run: {workdir}/best_run), got {run!r}"
        )
    point = plan.points[plan.runs[run].point]
    directory = sweep_spec.point_checkpoints(workdir, point.index)
    if not directory.exists() and any(directory.parent.glob(f"{directory.name}.process-*")):
        raise ConfigError(  # each process saved only its own runs, as .npz trees
            f"--run: expected a sweep trained in one process, got {workdir}, trained in several "
            f"(its runs' checkpoints are per process); read its best run: {workdir}/best_run"
        )
    return plan.runs[run].config, directory, point.runs.index(plan.runs[run]), len(point.runs)


def _restore(checkpoints, step: int, like: RunsState, index: int, size: int) -> RunsState:
    """Run ``index`` of the ``size`` runs of checkpoint ``step``, shaped as
    ``like`` (one run's)."""
    leaves = lambda f: lambda tree: jax.tree_util.tree_map(f, tree)  # noqa: E731
    shaped = leaves(lambda a: jax.ShapeDtypeStruct((size, *a.shape[1:]), a.dtype))
    return checkpoints.restore(step, like.on_runs(shaped)).on_runs(
        leaves(lambda a: a[index : index + 1])
    )


def evaluate_run(
    workdir: Path, step: str | int = "best", *, run: int | None = None, trust_code: bool = False
) -> dict:
    """Evaluates run ``run`` of ``workdir`` at checkpoint ``step`` on its
    held-out data (``restore_run``); writes ``eval.json`` (run i of a
    sweep: ``eval.run-<i>.json``)."""
    workdir = Path(workdir)
    saved = restore_run(workdir, run, step, trust_code=trust_code)
    program = saved.program
    batch = program.eval_batch(first(saved.keys))
    metrics, _, _ = program.evaluate(saved.hparams, saved.keys, saved.state, batch)
    report = {"workdir": str(workdir)} | ({"run": run} if run is not None else {})
    report |= {
        "step": saved.step,
        "eval": {k: float(v[0]) for k, v in jax.device_get(metrics).items()},
        "baselines": program.setup.task.baselines,
    }
    name = "eval.json" if run is None else f"eval.run-{run}.json"
    (workdir / name).write_text(json.dumps(report, indent=2) + "\n")
    return report


def choose_step(checkpoints, step) -> int:
    """The saved step that ``--step`` names: "latest" or a number."""
    steps = checkpoints.steps()
    if not steps:
        raise CheckpointError(f"{checkpoints.directory}: no checkpoints to evaluate")
    if step == "latest":
        return checkpoints.latest_step()
    try:
        step = int(step)
    except ValueError:
        raise ConfigError(f"--step: expected best, latest or a number, got {step!r}") from None
    if step not in steps:
        raise CheckpointError(f"--step: no checkpoint at step {step}; saved steps: {steps}")
    return step
