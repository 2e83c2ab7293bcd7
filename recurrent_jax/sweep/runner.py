"""Running a grid point's runs as one flat vmapped run axis.

Every stage takes stacked ``HParams`` and keys with a leading run axis
``N`` and maps the single-run stage of ``recurrent_jax.train.core`` over it:
``jax.vmap``, or ``jax.lax.map(..., batch_size=runs_per_call)`` (vmapped
groups of runs one after another inside the same program) when the runs do
not fit in memory at once. Each stage compiles once per grid point.

``run_point(config, hparams, keys)`` trains all runs in one call (the
whole ``make_train``); ``point_stages(config, runs_per_call)`` gives the
stages the host loop (``recurrent_jax.sweep.loop``) calls between calls of
steps. With a ``mesh`` (``recurrent_jax.distributed.make_mesh``) the run
axis is split over its ``runs`` axis (inputs placed with
``distributed.shard_runs``; ``jax.jit`` partitions the stages, and their
outputs keep the sharding) and each run's batch over ``data``; groups then
take the same number of runs from every device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from recurrent_jax.distributed import RUNS, data_parallel_task
from recurrent_jax.train import core
from recurrent_jax.train.config import ExperimentConfig

MEMORY_FRACTION = 0.5  # of free device memory the runs of one call may use


class Best(NamedTuple):
    """Per run: the state at its best eval so far and that eval's score
    (the primary metric, negated when lower is better; -inf before any)."""

    state: core.TrainState
    score: jax.Array


class SweepState(NamedTuple):
    """The checkpointed state of a grid point: all its runs, stacked."""

    step: jax.Array  # int32 scalar: steps done by every run
    train: core.TrainState  # leading axis N
    best: Best  # leading axis N


class PointStages(NamedTuple):
    task: object
    init: Callable  # (hparams, keys) -> SweepState
    run_steps: Callable  # (hparams, SweepState, keys) -> (SweepState, metrics (N, steps))
    evaluate: Callable  # (hparams, SweepState, keys) -> (metrics (N,), SweepState)
    runs_per_call: int | None


# --- inputs -----------------------------------------------------------------------


def stack_hparams(configs: list[ExperimentConfig], traced=()) -> core.HParams:
    """``HParams`` of (N,) float32 arrays: run i's are
    ``default_hparams(configs[i], traced)`` (fields that are None stay None)."""
    each = [core.default_hparams(c, traced) for c in configs]
    return core.HParams(
        *(None if values[0] is None else jnp.stack(values) for values in zip(*each, strict=True))
    )


def stack_keys(seeds) -> jax.Array:
    """(N,) typed keys, ``jax.random.key(seed)`` each (as a solo run's)."""
    return jnp.stack([jax.random.key(int(s)) for s in seeds])


def num_runs(hparams: core.HParams) -> int:
    return int(next(a for a in hparams if a is not None).shape[0])


# --- mapping over the run axis -------------------------------------------------------


def over_runs(
    fn: Callable, runs_per_call: int | None, total: int, mesh: Mesh | None = None
) -> Callable:
    """``fn`` mapped over the leading axis of all its arguments: ``vmap``,
    or vmapped groups of ``runs_per_call`` runs under ``lax.map``.

    With a ``mesh`` the run axis (``total``, a multiple of its ``runs`` size
    ``D``) is split in ``D`` contiguous blocks, one a device; a group takes
    ``runs_per_call // D`` runs of every block, so each device keeps working on
    its own runs."""
    if mesh is None:
        if runs_per_call is None or runs_per_call >= total:
            return jax.vmap(fn)
        return lambda *args: jax.lax.map(lambda a: fn(*a), args, batch_size=runs_per_call)
    vmapped = jax.vmap(fn, spmd_axis_name=RUNS)
    if runs_per_call is None or runs_per_call >= total:
        return vmapped
    shards = mesh.shape[RUNS]
    by_block, by_run = NamedSharding(mesh, P(None, RUNS)), NamedSharding(mesh, P(RUNS))

    def split(a):  # (total, ...) -> (total / D, D, ...): row j holds run j of every block
        a = jnp.swapaxes(a.reshape(shards, total // shards, *a.shape[1:]), 0, 1)
        return jax.lax.with_sharding_constraint(a, by_block)

    def merge(a):
        a = jnp.swapaxes(a, 0, 1).reshape(total, *a.shape[2:])
        return jax.lax.with_sharding_constraint(a, by_run)

    def mapped(*args):
        blocks = jax.tree_util.tree_map(split, args)
        per_call = max(1, runs_per_call // shards)
        out = jax.lax.map(lambda a: vmapped(*a), blocks, batch_size=per_call)
        return jax.tree_util.tree_map(merge, out)

    return mapped


def _init_run(config, task, hparams, key) -> tuple[core.TrainState, Best]:
    state = core.init_state(config, task, hparams, key)
    return state, Best(state, jnp.asarray(-jnp.inf, jnp.float32))


def _eval_run(config, task, hparams, state, best, key):
    batch = core.eval_batch(config, task, key)
    metrics = core.evaluate(config, task, hparams, state.params, batch)
    value = metrics[task.primary_metric]
    score = (value if task.higher_is_better else -value).astype(jnp.float32)
    better = (state.step > 0) & (score > best.score)  # NaN is never better
    best = jax.tree_util.tree_map(
        lambda new, old: jnp.where(better, new, old), Best(state, score), best
    )
    return metrics, best


def point_stages(
    config: ExperimentConfig,
    num_runs: int,
    runs_per_call: int | None = None,
    mesh: Mesh | None = None,
):
    """The jitted stages of one grid point (``config``: its compiled config,
    see ``spec.GridPoint.config``) for ``num_runs`` stacked runs (with a
    ``mesh``: a multiple of its ``runs`` size); configs that share
    ``core.static_config`` share them."""
    return _point_stages(core.static_config(config), num_runs, runs_per_call, mesh)


@functools.cache
def _point_stages(
    config: ExperimentConfig, total: int, runs_per_call: int | None, mesh: Mesh | None
) -> PointStages:
    task = core.build_task(config)
    if mesh is not None:
        task = data_parallel_task(task, mesh, config.data.batch_size)
    jit = functools.partial(jax.jit, compiler_options=core.compiler_options(config))
    mapped = lambda fn: over_runs(fn, runs_per_call, total, mesh)
    init_runs = mapped(functools.partial(_init_run, config, task))
    step_runs = mapped(functools.partial(core.run_steps, config, task))
    eval_runs = mapped(functools.partial(_eval_run, config, task))

    def sweep_init(hparams, keys):
        train, best = init_runs(hparams, keys)
        return SweepState(jnp.zeros((), jnp.int32), train, best)

    def sweep_steps(hparams, state: SweepState, keys):
        train, metrics = step_runs(hparams, state.train, keys)
        steps = config.training.steps_per_call
        return state._replace(step=state.step + steps, train=train), metrics

    def sweep_eval(hparams, state: SweepState, keys):
        metrics, best = eval_runs(hparams, state.train, state.best, keys)
        return metrics, state._replace(best=best)

    return PointStages(task, jit(sweep_init), jit(sweep_steps), jit(sweep_eval), runs_per_call)


def run_point(
    config: ExperimentConfig,
    hparams: core.HParams,
    keys: jax.Array,
    *,
    runs_per_call: int | None = None,
):
    """All runs of one grid point in one compiled call:
    ``jit(vmap(make_train(config)))(hparams, keys) -> (states, metrics)``,
    leading axis N everywhere (``metrics["train"]``: (N, calls, steps)).
    Run i equals ``make_train(config)(hparams[i], keys[i])``."""
    return _run_point(core.static_config(config), num_runs(hparams), runs_per_call)(hparams, keys)


@functools.cache
def _run_point(config: ExperimentConfig, total: int, runs_per_call: int | None):
    train = over_runs(core.make_train(config), runs_per_call, total)
    return jax.jit(train, compiler_options=core.compiler_options(config))


# --- memory ----------------------------------------------------------------------


def estimate_run_bytes(config: ExperimentConfig, task=None) -> int:
    """Device bytes one run needs in a training step, from shapes alone
    (``jax.eval_shape``, nothing compiled): its state three times (the
    state, the best state and the updated state), its gradients, a batch
    and the residuals the backward pass keeps."""
    task = core.build_task(config) if task is None else task
    hparams = core.default_hparams(config)
    key = jax.random.key(0)

    def residuals(params):
        batch = task.sample_train(key, config.data.batch_size)
        loss = lambda p: core.loss_fn(config, task, hparams, p, batch, key)[0]
        return batch, jax.vjp(loss, params)[1]

    state = jax.eval_shape(lambda: core.init_state(config, task, hparams, key))
    batch_and_residuals = jax.eval_shape(residuals, state.params)
    return 3 * _bytes(state) + _bytes(state.params) + _bytes(batch_and_residuals)


def _bytes(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in leaves))


def free_device_bytes(device=None) -> int:
    """Free memory of ``device``: ``memory_stats()`` where the backend has
    it (GPU, TPU), else the host's available memory (CPU)."""
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def choose_runs_per_call(total: int, bytes_per_run: int, free_bytes: int) -> int:
    """Runs per vmapped call: all of them if they fit in
    ``MEMORY_FRACTION`` of ``free_bytes``, else as many as fit (at least 1)."""
    fit = int(MEMORY_FRACTION * free_bytes) // max(bytes_per_run, 1)
    return max(1, min(total, fit))


# --- compilation ------------------------------------------------------------------


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (kept where JAX already
    has one, e.g. from ``JAX_COMPILATION_CACHE_DIR``); default directory
    ``$XDG_CACHE_HOME/recurrent_jax/jax`` (``~/.cache/...``)."""
    from jax.experimental.compilation_cache import compilation_cache

    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    if directory is None:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        directory = Path(root) / "recurrent_jax" / "jax"
    Path(directory).mkdir(parents=True, exist_ok=True)
    compilation_cache.set_cache_dir(str(directory))
    compilation_cache.reset_cache()  # re-read the directory if the cache was initialised
    return Path(directory)


class CompileCounter:
    """Counts XLA compilations (persistent-cache hits included) while
    active, by jitted function name: ``with CompileCounter() as c: ...;
    c.count("sweep_")``."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.names: list[str] = []

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.names.append(str(kwargs.get("fun_name", "")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

    def count(self, contains: str = "") -> int:
        return sum(contains in name for name in self.names)
