"""Runs and data sharded over devices and hosts, on JAX's own engine.

A sweep's runs form one flat run axis (leading axis ``N`` of the stacked
``HParams`` and keys). Devices form a 2-D ``jax.sharding.Mesh`` with axes
``("runs", "data")``:

- ``runs``: the run axis is split over it (``PartitionSpec("runs")``) and
  ``jax.jit(jax.vmap(train))`` is partitioned by XLA, each device training
  its own ``N / runs`` runs with no communication;
- ``data``: inside every run the training batch is split over it (a
  ``with_sharding_constraint`` on the sampled batch); the params stay
  replicated and XLA all-reduces the gradients.

``N`` is padded up to a multiple of the ``runs`` size by repeating the last
run (the copies are trained and thrown away) and the padding is stripped
from the outputs. ``recurrent_jax.train.runs.compile_runs(config, N,
mesh=mesh)`` is the program of such runs; this module has the mesh, the
padding and the processes.

Several hosts: call ``initialize()`` (``jax.distributed.initialize``) first
in every process. Either each process trains its own slice of the runs
(``process_runs``) on its local devices and writes only its rows, and
process 0 merges the tables (``merge_run_tables``) after ``barrier()``; or
all processes run one program over a global mesh and each keeps the runs
its devices hold (``addressable_runs``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

RUNS = "runs"
DATA = "data"


# --- the mesh -------------------------------------------------------------------


def make_mesh(runs: int | None = None, data: int = 1, *, devices=None) -> Mesh:
    """A ``(runs, data)`` mesh over ``devices`` (default ``jax.devices()``:
    every device of every process; pass ``jax.local_devices()`` for this
    process only).

    ``runs=None`` takes all devices not used by ``data``. Devices are ordered
    by process, then id, and ``data`` is the inner axis: a data-parallel
    group stays within a host whenever ``data`` divides the devices per host.
    """
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    if not (isinstance(data, int) and data >= 1) or count % data:
        raise ValueError(f"data: expected a positive divisor of the {count} devices, got {data!r}")
    if runs is None:
        runs = count // data
    if not (isinstance(runs, int) and runs >= 1) or runs * data != count:
        raise ValueError(
            f"runs: expected runs * data == {count} devices (data={data}), got runs={runs!r}"
        )
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices, dtype=object).reshape(runs, data), (RUNS, DATA))


def padded_runs(n_runs: int, mesh: Mesh) -> int:
    """``n_runs`` rounded up to a multiple of the mesh's ``runs`` size."""
    size = mesh.shape[RUNS]
    return -(-n_runs // size) * size


def pad_runs(tree, n_padded: int):
    """Repeats the last run of every leaf (leading axis ``N``) up to
    ``n_padded`` runs."""

    def pad(a):
        extra = n_padded - a.shape[0]
        return a if extra == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])

    return jax.tree_util.tree_map(pad, tree)


def shard_runs(tree, mesh: Mesh):
    """Places every leaf (leading axis: runs, a multiple of the ``runs`` size)
    with ``NamedSharding(mesh, P("runs"))``; replicated over ``data``. With
    several processes the value must be the same in each."""
    return place(tree, NamedSharding(mesh, P(RUNS)))


def place(tree, sharding: NamedSharding):
    """Every leaf of ``tree`` placed with ``sharding``; with several
    processes the value must be the same in each."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda a: _global_array(a, sharding), tree)


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds in full."""
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(value), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# --- data parallelism ------------------------------------------------------------


def data_parallel_task(task, mesh: Mesh, batch_size: int):
    """``task`` whose training batches (and evaluation set, when it divides)
    are split over the mesh's ``data`` axis along the batch dimension.

    ``train.runs.compile_runs`` does, given a mesh; under ``jax.vmap(...,
    spmd_axis_name="runs")`` the constraint becomes ``P("runs", "data")``,
    so the run axis stays split too."""
    size = mesh.shape[DATA]
    if size == 1:
        return task
    if batch_size % size:
        raise ValueError(
            f"config.data.batch_size: expected a multiple of the mesh's data axis ({size}), "
            f"got {batch_size}"
        )
    sharding = NamedSharding(mesh, P(DATA))

    def constrain(batch):
        split = lambda a: a if a.shape[0] % size else jax.lax.with_sharding_constraint(a, sharding)
        return jax.tree_util.tree_map(split, batch)

    sample = lambda key, n: constrain(task.sample_train(key, n))
    eval_set = lambda key, n: constrain(task.eval_set(key, n))
    return task._replace(sample_train=sample, eval_set=eval_set)


def addressable_runs(tree, n_runs: int) -> tuple[list[int], object]:
    """This process's runs of sharded outputs (leading axis: runs, padded or
    not): ``(run ids, tree of NumPy arrays)``, the padding left out. A run
    held by devices of several processes (a ``data`` axis spanning hosts)
    goes to the lowest process index, so every run belongs to one process."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    first = leaves[0]
    me = jax.process_index()
    owned = {}  # start index -> (stop, owner process)
    for shard_device, index in first.sharding.devices_indices_map(first.shape).items():
        start, stop, _ = index[0].indices(first.shape[0])
        prev = owned.get(start, (stop, math.inf))
        owned[start] = (stop, min(prev[1], shard_device.process_index))
    mine = sorted((start, stop) for start, (stop, owner) in owned.items() if owner == me)
    ids = [i for start, stop in mine for i in range(start, min(stop, n_runs))]

    def take(a):
        by_start = {s.index[0].indices(a.shape[0])[0]: s.data for s in a.addressable_shards}
        parts = [np.asarray(jax.device_get(by_start[start])) for start, _ in mine]
        stacked = np.concatenate(parts) if parts else np.zeros((0, *a.shape[1:]), a.dtype)
        return stacked[: len(ids)]

    return ids, jax.tree_util.tree_unflatten(treedef, [take(a) for a in leaves])


# --- several processes --------------------------------------------------------------


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
) -> tuple[int, int]:
    """``jax.distributed.initialize``, with unset arguments read from
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` and
    ``JAX_LOCAL_DEVICE_IDS``; what is still unset is detected by JAX (Slurm,
    Open MPI, Cloud TPU, Kubernetes). Call it before any other JAX work.
    Returns ``(process_index, process_count)``."""
    env = os.environ
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"),
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
    return jax.process_index(), jax.process_count()


def process_runs(
    n_runs: int, process_index: int | None = None, process_count: int | None = None
) -> range:
    """The run ids this process trains: a contiguous block, block sizes
    differing by at most one (``np.array_split``); defaults to
    ``jax.process_index()`` of ``jax.process_count()``."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index: expected 0 <= index < {count}, got {index}")
    base, extra = divmod(n_runs, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def barrier(name: str) -> None:
    """Waits until every process reaches ``barrier(name)`` (a no-op with one
    process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_path(path: str | os.PathLike, process_index: int | None = None) -> Path:
    """This process's (or process ``process_index``'s) file for a table:
    ``runs.jsonl`` becomes ``runs.process-1-of-4.jsonl`` with several
    processes, unchanged with one."""
    path, count = Path(path), jax.process_count()
    if count == 1:
        return path
    index = jax.process_index() if process_index is None else process_index
    return path.with_name(f"{path.stem}.process-{index}-of-{count}{path.suffix}")


def process_paths(path: str | os.PathLike) -> list[Path]:
    """Every process's ``process_path(path)``, by process index."""
    return [process_path(path, i) for i in range(jax.process_count())]


def read_run_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``.jsonl`` (one JSON object per line) or ``.csv`` table."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def write_run_table(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Writes rows as ``.jsonl``, or ``.csv`` (columns in first-seen order)."""
    path, rows = Path(path), list(rows)
    if path.suffix == ".csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        return
    with path.open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def merge_run_tables(
    paths: Iterable[str | os.PathLike],
    out_path: str | os.PathLike | None = None,
    *,
    key: str = "run_id",
) -> list[dict]:
    """One run table from the processes' tables: rows sorted by ``key``; a
    run id found twice is an error. Written to ``out_path`` if given."""
    rows, seen = [], {}
    for path in paths:
        for row in read_run_table(path):
            if key not in row:
                raise ValueError(f"{path}: expected column {key!r} in every row, got {sorted(row)}")
            run_id = row[key]
            if run_id in seen:
                raise ValueError(f"{key}={run_id!r} appears in both {seen[run_id]} and {path}")
            seen[run_id] = path
            rows.append(row)
    rows.sort(key=lambda row: _sort_key(row[key]))
    if out_path is not None:
        write_run_table(out_path, rows)
    return rows


def _sort_key(run_id):
    text = str(run_id)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)
