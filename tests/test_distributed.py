"""Scale-out: runs sharded over fake CPU devices, data parallelism, a
runs x data mesh, and two processes over loopback (JAX's CPU collectives),
each against the unsharded single-process run.

The device count of a process is fixed before JAX starts, so the sharded
cases run in child processes: this file is also their script
(``python tests/test_distributed.py devices OUT`` and ``... worker ...``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

N_RUNS = 6  # not a multiple of 4: the run axis is padded to 8
DP_RUN = 2  # the run trained data-parallel
SHARDED_TOL = {"rtol": 1e-5, "atol": 1e-6}  # the same per-run program, partitioned
# The batch mean of the loss and the gradient sums are reduced in a
# different order (per-device partial sums, then an all-reduce).
DATA_PARALLEL_TOL = {"rtol": 1e-4, "atol": 1e-5}


# --- the child processes ------------------------------------------------------------


def _setup(num_devices: int):
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", num_devices)
    return jax


def _experiment():
    """adding:smoke, 4 steps in 2 chunks; N_RUNS learning rates."""
    import jax
    import jax.numpy as jnp

    from recurrent_jax.train import config_files, core, from_config_dict

    cfg = config_files.load_config("adding:smoke")
    steps = [("training.num_steps", "4"), ("training.steps_per_call", "2")]
    config_files.apply_overrides(cfg, [*steps, ("training.eval_every", "2")])
    config = from_config_dict(cfg)
    base = core.default_hparams(config)
    hparams = jax.tree_util.tree_map(lambda a: jnp.full((N_RUNS,), a), base)
    rates = jnp.geomspace(1e-3, 1e-1, N_RUNS).astype(jnp.float32)
    keys = jax.random.split(jax.random.key(7), N_RUNS)
    return config, hparams._replace(learning_rate=rates), keys


def _flat(tree) -> dict:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _take(tree, i):
    import jax

    return jax.tree_util.tree_map(lambda a: a[i], tree)


def child_devices(out: Path):
    """4 fake devices: the unsharded sweep and every sharded variant."""
    jax = _setup(4)
    from recurrent_jax import distributed as dist
    from recurrent_jax.train import core, make_train
    from recurrent_jax.train.runs import compile_runs

    config, hparams, keys = _experiment()
    options = core.compiler_options(config)
    reference = jax.jit(jax.vmap(make_train(config)), compiler_options=options)(hparams, keys)
    np.savez(out / "reference.npz", **_flat(reference))

    sweep = compile_runs(config, N_RUNS, mesh=dist.make_mesh())
    np.savez(out / "runs.npz", **_flat(sweep.train(hparams, keys)))
    leaf = sweep.whole_runs(*sweep.place((hparams, keys)))[0].params["readout"]["w"]
    shards = sorted((s.device.id, s.index[0].start) for s in leaf.addressable_shards)
    info = {"spec": list(leaf.sharding.spec), "shards": shards, "shape": leaf.shape}

    grid = compile_runs(config, N_RUNS, mesh=dist.make_mesh(runs=2, data=2))
    inputs = grid.place((hparams, keys))
    compiled = grid.whole_runs.lower(*inputs).compile()
    np.savez(out / "grid.npz", **_flat(grid.unpad(compiled(*inputs))))
    info["grid_all_reduce"] = "all-reduce" in compiled.as_text()

    data = compile_runs(config, 1, mesh=dist.make_mesh(runs=1, data=4))
    one_run = _take((hparams, keys), slice(DP_RUN, DP_RUN + 1))
    single = _take(data.train(*one_run), 0)
    np.savez(out / "data.npz", **_flat(single))
    (out / "info.json").write_text(json.dumps(info))


def child_worker(process_id: int, port: int, out: Path, modes: str):
    """One of two processes (2 fake devices each) on one machine; ``modes``:
    comma-separated "local", "global", "data"."""
    jax = _setup(2)
    from recurrent_jax import distributed as dist
    from recurrent_jax.train.runs import compile_runs

    index, count = dist.initialize(f"localhost:{port}", 2, process_id)
    assert (index, count) == (process_id, 2) and len(jax.devices()) == 4
    config, hparams, keys = _experiment()
    modes = modes.split(",")

    if "local" in modes:  # own runs on own devices, own rows; process 0 merges
        ids = list(dist.process_runs(N_RUNS))
        local_mesh = dist.make_mesh(devices=jax.local_devices())
        local = compile_runs(config, len(ids), mesh=local_mesh)
        _, metrics = local.train(*_take((hparams, keys), np.asarray(ids)))
        losses = np.asarray(metrics["eval"]["loss"])
        rows = [{"run_id": i, "loss": float(loss)} for i, loss in zip(ids, losses, strict=True)]
        dist.write_run_table(dist.process_path(out / "runs.jsonl"), rows)
        np.savez(out / f"local-{index}.npz", ids=ids, **_flat(metrics))
        dist.barrier("tables written")
        if index == 0:
            dist.merge_run_tables(sorted(out.glob("runs.process-*.jsonl")), out / "runs.jsonl")

    if "global" in modes:  # one program over the global mesh; keep the runs held here
        outputs = compile_runs(config, N_RUNS, mesh=dist.make_mesh()).train(hparams, keys)
        ids, mine = dist.addressable_runs(outputs[1], N_RUNS)
        np.savez(out / f"global-{index}.npz", ids=ids, **_flat(mine))

    if "data" in modes:  # one run, its batch split over the devices of both processes
        data = compile_runs(config, 1, mesh=dist.make_mesh(runs=1, data=4))
        one_run = _take((hparams, keys), slice(DP_RUN, DP_RUN + 1))
        _, single = data.whole_runs(*data.place(one_run))
        single = jax.tree_util.tree_map(lambda a: np.asarray(a.addressable_data(0))[0], single)
        np.savez(out / f"data-{index}.npz", **_flat(single))
    dist.barrier("done")


# --- the tests ----------------------------------------------------------------------


def _spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python tests/test_distributed.py *args``; ``env``: added ``JAX_*``
    variables (``args`` starting with "-m" or "-c" run that instead)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    clean = {**clean, "JAX_PLATFORMS": "cpu", **(env or {})}
    command = list(args) if args[0] in ("-m", "-c") else [__file__, *args]
    return subprocess.Popen(
        [sys.executable, *command],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(*procs: subprocess.Popen, timeout: float = 300):
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    failed = [
        f"process {i} (exit {p.returncode}):\n{log[-3000:]}"
        for i, (p, log) in enumerate(zip(procs, logs, strict=True))
        if p.returncode != 0
    ]
    assert not failed, "\n".join(failed)  # every failing process: the first may only time out


def _load(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _assert_close(got: dict, want: dict, **tol):
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=name, **tol)


def _row(tree: dict, i) -> dict:
    return {k: v[i] for k, v in tree.items()}


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    _wait(_spawn("devices", str(out)))
    return out


def test_sharded_sweep_equals_unsharded_and_is_split_over_4_devices(devices):
    reference = _load(devices / "reference.npz")
    _assert_close(_load(devices / "runs.npz"), reference, **SHARDED_TOL)
    info = json.loads((devices / "info.json").read_text())
    assert info["spec"] == ["runs"]
    assert info["shards"] == [[0, 0], [1, 2], [2, 4], [3, 6]]  # 8 padded runs, 2 a device
    assert info["shape"][0] == 8


def test_data_parallel_run_equals_unsharded_run(devices):
    want = _row(_load(devices / "reference.npz"), DP_RUN)
    _assert_close(_load(devices / "data.npz"), want, **DATA_PARALLEL_TOL)


def test_runs_by_data_mesh_equals_unsharded_and_reduces_gradients(devices):
    reference = _load(devices / "reference.npz")
    _assert_close(_load(devices / "grid.npz"), reference, **DATA_PARALLEL_TOL)
    assert json.loads((devices / "info.json").read_text())["grid_all_reduce"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path: Path, modes: str):
    """Runs both workers on a free loopback port."""
    port = _free_port()
    _wait(*(_spawn("worker", str(i), str(port), str(tmp_path), modes) for i in range(2)))


def _reference_metrics(devices: Path) -> dict:
    reference = _load(devices / "reference.npz")
    return {k[len("[1]") :]: v for k, v in reference.items() if k.startswith("[1]")}


def _assert_halves(tmp_path: Path, mode: str, metrics: dict):
    parts = [_load(tmp_path / f"{mode}-{i}.npz") for i in range(2)]
    ids = [p.pop("ids").tolist() for p in parts]
    want = {"local": [[0, 1, 2], [3, 4, 5]], "global": [[0, 1, 2, 3], [4, 5]]}[mode]
    assert ids == want, mode
    for part, part_ids in zip(parts, ids, strict=True):
        _assert_close(part, _row(metrics, np.asarray(part_ids)), **SHARDED_TOL)


def test_two_processes_over_loopback_equal_one_process(devices, tmp_path):
    """Each process trains half the runs and writes its rows, process 0
    merges one table; one run data-parallel over both processes' devices
    (gradients all-reduced through JAX's CPU collectives, gloo)."""
    _two_processes(tmp_path, "local,data")
    metrics = _reference_metrics(devices)
    _assert_halves(tmp_path, "local", metrics)
    for i in range(2):
        _assert_close(_load(tmp_path / f"data-{i}.npz"), _row(metrics, DP_RUN), **DATA_PARALLEL_TOL)
    table = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [row["run_id"] for row in table] == list(range(N_RUNS))
    want = metrics["['eval']['loss']"]
    np.testing.assert_allclose([row["loss"] for row in table], want, **SHARDED_TOL)


@pytest.mark.slow
def test_two_processes_share_one_global_mesh(devices, tmp_path):
    """One program over both processes' 4 devices; each keeps its runs."""
    _two_processes(tmp_path, "global")
    _assert_halves(tmp_path, "global", _reference_metrics(devices))


# --- in-process: meshes, run blocks and tables -----------------------------------------


def test_mesh_errors_name_the_argument():
    from recurrent_jax import distributed as dist

    count = len(__import__("jax").devices())
    with pytest.raises(ValueError, match="runs: expected runs \\* data"):
        dist.make_mesh(runs=count + 1)
    with pytest.raises(ValueError, match="data: expected a positive divisor"):
        dist.make_mesh(data=count + 1)
    mesh = dist.make_mesh()
    assert mesh.axis_names == ("runs", "data") and mesh.shape["runs"] == count


@pytest.mark.parametrize("n_runs", [0, 1, 5, 6, 7, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_process_runs_partition_the_run_axis(n_runs, count):
    from recurrent_jax.distributed import process_runs

    blocks = [process_runs(n_runs, i, count) for i in range(count)]
    assert [i for block in blocks for i in block] == list(range(n_runs))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_pad_runs_keeps_typed_keys():
    import jax
    import jax.numpy as jnp

    from recurrent_jax import distributed as dist

    tree = (jnp.arange(3.0), jax.random.split(jax.random.key(0), 3))
    padded = dist.pad_runs(tree, 4)
    assert padded[0].tolist() == [0.0, 1.0, 2.0, 2.0]
    assert jnp.array_equal(jax.random.key_data(padded[1][3]), jax.random.key_data(tree[1][2]))
    assert padded[1].shape == (4,)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_merge_run_tables(tmp_path, suffix):
    from recurrent_jax import distributed as dist

    dist.write_run_table(tmp_path / f"b{suffix}", [{"run_id": 10, "lr": 0.1}, {"run_id": 2}])
    dist.write_run_table(tmp_path / f"a{suffix}", [{"run_id": 0, "lr": 0.3}])
    rows = dist.merge_run_tables(
        [tmp_path / f"b{suffix}", tmp_path / f"a{suffix}"], tmp_path / "all.jsonl"
    )
    assert [int(r["run_id"]) for r in rows] == [0, 2, 10]
    assert dist.read_run_table(tmp_path / "all.jsonl") == rows
    dist.write_run_table(tmp_path / f"c{suffix}", [{"run_id": 2}])
    with pytest.raises(ValueError, match="run_id='?2'? appears in both"):
        dist.merge_run_tables([tmp_path / f"b{suffix}", tmp_path / f"c{suffix}"])
    assert dist.process_path(tmp_path / "runs.jsonl") == tmp_path / "runs.jsonl"


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "devices":
        child_devices(Path(rest[0]))
    else:
        child_worker(int(rest[0]), int(rest[1]), Path(rest[2]), rest[3])
