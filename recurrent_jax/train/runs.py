"""One compiled unit for N >= 1 runs: ``compile_runs(config, num_runs)``.

A ``Program`` holds the jitted stages of ``train.core`` for one config:
``init``, ``run_steps`` (one call of ``training.steps_per_call`` steps),
``evaluate`` (which also keeps each run's best state) and ``train`` (whole
runs in one call). ``num_runs=N`` stacks N runs on a leading axis, one
layout for a training run (N = 1) and a sweep's grid point: ``jax.vmap``,
or vmapped groups of ``runs_per_call`` runs under ``lax.map`` when they do
not fit in memory at once. With a ``mesh`` (``distributed.make_mesh``) the run axis is padded to
a multiple of its ``runs`` size and split over it, and each run's batch
over ``data``; ``Program.place`` pads and shards inputs, ``unpad`` strips
the padding. Programs are cached (the last ``CACHED_PROGRAMS``): configs
that share ``core.static_config`` share one compile and one build of the
task and model (``setup_of``). How much memory a run needs: ``train.memory``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from recurrent_jax import distributed as dist
from recurrent_jax.data.stream import Stream
from recurrent_jax.train import core
from recurrent_jax.train.config import DataConfig, ExperimentConfig


class Best(NamedTuple):
    """Per run: the state at its best eval so far and that eval's score
    (the primary metric, negated when lower is better; -inf before any)."""

    state: core.TrainState
    score: jax.Array


class RunsState(NamedTuple):
    """The state of N >= 1 runs, as checkpointed: steps done by every run,
    each run's training state and best so far (leading axis N) and, for a
    streamed run, the calls read from its
    ``data.stream.Stream`` (an int32 scalar; None otherwise)."""

    step: jax.Array
    train: core.TrainState
    best: Best
    data: jax.Array | None = None

    def on_runs(self, f: Callable) -> RunsState:
        """``f`` applied to the parts with the run axis (``train``, ``best``)."""
        return self._replace(train=f(self.train), best=f(self.best))


class Program(NamedTuple):
    """The jitted stages of ``num_runs`` runs of one config.

    Attributes:
      setup: the ``core.Setup`` the stages close over.
      num_runs: N.
      total: N padded to the mesh.
      runs_per_call: runs vmapped at once (None: all of them).
      mesh: the ``(runs, data)`` mesh, or None.
      init: ``(hparams, keys) -> RunsState``.
      run_steps: ``(hparams, keys, state, batches=None) -> (state,
        metrics)``, metrics (N, steps_per_call) each; ``batches``: a
        streamed run's call of batches (``open_stream``), the same for
        every run.
      evaluate: ``(hparams, keys, state, batch=None) -> (metrics, outputs,
        state)``; ``batch``: a held-out batch every run is scored on (else
        each run draws its own, and ``outputs`` is None), ``outputs`` the
        runs' model outputs on it (leading axis N).
      eval_batch: ``(key) -> batch``, the held-out batch of one run's key.
      whole_runs: ``(hparams, keys) -> (train states, metrics)``, whole runs
        in one call (``core.make_train``), on inputs already placed
        (``train`` places them).
    """

    setup: core.Setup
    num_runs: int
    total: int
    runs_per_call: int | None
    mesh: Mesh | None
    init: Callable
    run_steps: Callable
    evaluate: Callable
    eval_batch: Callable
    whole_runs: Callable

    def train(self, hparams, keys):
        """``(train states, metrics)`` of whole runs in one call: the inputs
        placed on the mesh, the outputs stripped of the padding (when this
        process holds them all; with several processes
        ``distributed.addressable_runs(outputs, N)`` reads its own)."""
        outputs = self.whole_runs(*self.place((hparams, keys)))
        if all(a.is_fully_addressable for a in jax.tree_util.tree_leaves(outputs)):
            return self.unpad(outputs)
        return outputs

    def open_stream(self, data: DataConfig, threads: int = 2) -> Stream | None:
        """The host-fed batches of a streamed run (``data``: the run's
        ``config.data``, whose ``shuffle_seed`` and ``prefetch`` it uses),
        each call's batches put on the device split over the mesh's
        ``data`` axis; None for a run whose data is on the device."""
        setup = self.setup
        if not setup.streamed:
            return None
        place = jax.device_put
        if self.mesh is not None:  # (steps, batch, ...): the batch split over data
            split = P(None, dist.DATA) if self.mesh.shape[dist.DATA] > 1 else P()
            place = functools.partial(dist.place, sharding=NamedSharding(self.mesh, split))
        return Stream(
            setup.task.train_rows,
            setup.batch_size,
            setup.steps_per_call,
            seed=data.shuffle_seed,
            prefetch=data.prefetch,
            threads=threads,
            place=place,
        )

    def place(self, tree):
        """Pads the run axis to the mesh and splits it over ``runs``."""
        if self.mesh is None:
            return tree
        return dist.shard_runs(dist.pad_runs(tree, self.total), self.mesh)

    def unpad(self, tree):
        """``tree`` (or its ``jax.eval_shape``) without the padded runs."""
        n = self.num_runs

        def strip(a):
            if a.shape[0] == n:
                return a
            if isinstance(a, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype)
            return a[:n]

        return jax.tree_util.tree_map(strip, tree)


CACHED_PROGRAMS = 4  # compiled programs kept alive (each holds its task's device data)


def compile_runs(
    config: ExperimentConfig,
    num_runs: int = 1,
    *,
    runs_per_call: int | None = None,
    mesh: Mesh | None = None,
) -> Program:
    """The ``Program`` of ``num_runs`` >= 1 runs of ``config`` (see the module
    docstring); ``runs_per_call`` None or >= ``num_runs`` vmaps all at once."""
    if not (isinstance(num_runs, int) and num_runs >= 1):
        raise ValueError(f"num_runs: expected an int >= 1, got {num_runs!r}")
    return _compile(core.static_config(config), num_runs, runs_per_call, mesh)


def setup_of(config: ExperimentConfig) -> core.Setup:
    """The ``core.Setup`` (task and model) the programs of ``config`` close
    over: built once while it is among the last ``CACHED_PROGRAMS`` asked for."""
    return _setup(core.static_config(config))


_setup = functools.lru_cache(maxsize=CACHED_PROGRAMS)(core.make_setup)


@functools.lru_cache(maxsize=CACHED_PROGRAMS)
def _compile(config, num_runs, runs_per_call, mesh) -> Program:
    setup = _setup(config)
    if mesh is not None:  # each run's batches split over the mesh's data axis
        task = dist.data_parallel_task(setup.task, mesh, config.data.batch_size)
        setup = setup._replace(task=task)
    total = dist.padded_runs(num_runs, mesh) if mesh else num_runs
    mapped = lambda fn: over_runs(fn, runs_per_call, total, mesh)  # noqa: E731
    init_runs = mapped(functools.partial(_init_run, setup))
    whole_runs = mapped(functools.partial(core.whole_run, setup))

    def runs_init(hparams, keys):
        train, best = init_runs(hparams, keys)
        calls_read = jnp.zeros((), jnp.int32) if setup.streamed else None
        return RunsState(jnp.zeros((), jnp.int32), train, best, calls_read)

    def runs_steps(hparams, keys, state: RunsState, batches=None):
        # The batches are closed over, not mapped: every run trains on them.
        steps = lambda h, k, s: core.run_steps(setup, h, k, s, batches)  # noqa: E731
        train, metrics = mapped(steps)(hparams, keys, state.train)
        calls_read = None if batches is None else state.data + 1
        state = state._replace(step=state.step + setup.steps_per_call, train=train, data=calls_read)
        return state, metrics

    def runs_evaluate(hparams, keys, state: RunsState, batch=None):
        # A given batch is closed over, not mapped: every run is scored on it.
        scored = lambda h, k, s, b: _eval_run(setup, h, k, s, b, batch)  # noqa: E731
        metrics, outputs, best = mapped(scored)(hparams, keys, state.train, state.best)
        return metrics, (None if batch is None else outputs), state._replace(best=best)

    jit = functools.partial(jax.jit, compiler_options=core.compiler_options(config))
    return Program(
        setup,
        num_runs,
        total,
        runs_per_call,
        mesh,
        jit(runs_init),
        jit(runs_steps),
        jit(runs_evaluate),
        jit(functools.partial(core.eval_batch, setup)),
        jit(whole_runs),
    )


# --- one run's stages ----------------------------------------------------------------


def _init_run(setup: core.Setup, hparams, key) -> tuple[core.TrainState, Best]:
    state = core.init_state(setup, hparams, key)
    return state, Best(state, jnp.asarray(-jnp.inf, jnp.float32))


def _eval_run(setup: core.Setup, hparams, key, state, best: Best, batch=None):
    """The run's held-out metrics and outputs, and its best so far updated
    (NaN is never better; step 0 is not scored)."""
    metrics, outputs = core.evaluate(setup, hparams, key, state, batch)
    value = metrics[setup.task.primary_metric]
    score = (value if setup.task.higher_is_better else -value).astype(jnp.float32)
    better = (state.step > 0) & (score > best.score)
    best = jax.tree_util.tree_map(
        lambda new, old: jnp.where(better, new, old), Best(state, score), best
    )
    return metrics, outputs, best


# --- mapping over the run axis -------------------------------------------------------


def over_runs(
    fn: Callable, runs_per_call: int | None, total: int, mesh: Mesh | None = None
) -> Callable:
    """``fn`` mapped over the leading axis of all its arguments: ``vmap``,
    or vmapped groups of ``runs_per_call`` runs under ``lax.map``.

    With a ``mesh`` the run axis (``total``, a multiple of its ``runs`` size
    ``D``) is split in ``D`` contiguous blocks, one a device; a group takes
    ``runs_per_call // D`` runs of every block, so each device keeps working on
    its own runs. One run (``total`` 1) runs unbatched inside its run axis:
    the numbers of a plain ``jit(fn)``, which ``vmap`` rounds differently."""
    if total == 1:
        return lambda *args: jax.tree_util.tree_map(lambda a: a[None], fn(*first(args)))
    if mesh is None:
        if runs_per_call is None or runs_per_call >= total:
            return jax.vmap(fn)
        return lambda *args: jax.lax.map(lambda a: fn(*a), args, batch_size=runs_per_call)
    vmapped = jax.vmap(fn, spmd_axis_name=dist.RUNS)
    if runs_per_call is None or runs_per_call >= total:
        return vmapped
    shards = mesh.shape[dist.RUNS]
    by_block, by_run = NamedSharding(mesh, P(None, dist.RUNS)), NamedSharding(mesh, P(dist.RUNS))

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


# --- inputs and memory -------------------------------------------------------------


def stack_hparams(configs: list[ExperimentConfig], traced=()) -> core.HParams:
    """``HParams`` of (N,) float32 arrays: run i's are
    ``default_hparams(configs[i], traced)`` (fields that are None stay None)."""
    each = [core.default_hparams(c, traced) for c in configs]
    return core.HParams(
        *(None if values[0] is None else jnp.stack(values) for values in zip(*each, strict=True))
    )


def first(tree):
    """Run 0 of a tree of stacked runs."""
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def stack_keys(seeds) -> jax.Array:
    """(N,) typed keys, ``jax.random.key(seed)`` each (as a solo run's)."""
    return jnp.stack([jax.random.key(int(s)) for s in seeds])
