"""The ``sweep`` command over devices and hosts, against the single-device
sweep: its runs split over 4 fake CPU devices (chunked), and the same
command in two processes over loopback writing one merged run table.

A process's device count is fixed before JAX starts, so the sharded sweeps
run in child processes (the CLI itself, or this file as a script for the
interrupted and resumed sweeps).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import _free_port, _spawn, _wait  # noqa: E402

from recurrent_jax.train.config import ConfigError  # noqa: E402
from recurrent_jax.train.eval_run import restore_run  # noqa: E402

# adding_sweep:smoke (2 learning rates x 2 forget biases x 2 seeds), 2 chunks
# of 10 steps, an eval after each.
OVERRIDES = ["--config.training.num_steps=20"]
TOL = {"rtol": 1e-5, "atol": 1e-6}  # the same per-run program, partitioned


def _command(workdir: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--config=adding_sweep:smoke",
        f"--workdir={workdir}",
        "--no-progress",
        "--compilation-cache=none",
        *OVERRIDES,
        *extra,
    ]


def _cli(workdir: Path, *extra: str, env: dict) -> object:
    return _spawn("-m", "recurrent_jax.cli", *_command(workdir, *extra), env=env)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The sweep on this process's one device (no mesh)."""
    from recurrent_jax import cli

    workdir = tmp_path_factory.mktemp("single") / "sweep"
    assert cli.main(_command(workdir)) == 0
    return workdir


def _table(workdir: Path) -> list[dict]:
    with (workdir / "runs.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_table(got: list[dict], want: list[dict]):
    assert len(got) == len(want) == 8
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for column, value in w.items():
            try:
                expected = float(value)
            except ValueError:
                assert g[column] == value, column
                continue
            np.testing.assert_allclose(float(g[column]), expected, err_msg=column, **TOL)


def _assert_same_metrics(got: Path, want: Path):
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]
    got, want = read(got / "metrics.jsonl"), read(want / "metrics.jsonl")
    keys = lambda records: [(r["run_id"], r["step"], r["split"], sorted(r)) for r in records]
    assert keys(got) == keys(want)
    for g, w in zip(got, want, strict=True):
        for name, value in w.items():
            if isinstance(value, float):
                np.testing.assert_allclose(g[name], value, err_msg=name, **TOL)
            else:
                assert g[name] == value, name


def test_sweep_command_on_4_devices_equals_one_device(single, tmp_path):
    """All local devices on the runs axis by default; chunks of 4 runs take
    one run of every device; the stacked state stays split 2 runs a device."""
    workdir = tmp_path / "sweep"
    proc = _cli(workdir, "--sweep.runs_per_call=4", env={"JAX_NUM_CPU_DEVICES": "4"})
    _wait(proc)
    _assert_same_table(_table(workdir), _table(single))
    _assert_same_metrics(workdir, single)
    (point,) = json.loads((workdir / "summary.json").read_text())["points"]
    assert point["mesh"] == {"runs": 4, "data": 1} and point["runs_per_call"] == 4
    assert point["state_sharding"] == ["runs"] and point["state_devices"] == 4
    best = lambda d: json.loads((d / "best_run" / "best.json").read_text())["run_id"]
    assert best(workdir) == best(single)


@pytest.mark.slow
def test_same_command_in_two_processes_writes_one_merged_table(single, tmp_path):
    """Each process (2 fake devices) trains its 4 runs and writes its own
    files; process 0 merges run table, metrics, best run and plots."""
    workdir, port = tmp_path / "sweep", _free_port()
    env = {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
    env["JAX_NUM_CPU_DEVICES"] = "2"
    _wait(*(_cli(workdir, env={**env, "JAX_PROCESS_ID": str(i)}) for i in range(2)))
    _assert_same_table(_table(workdir), _table(single))
    _assert_same_metrics(workdir, single)
    assert (workdir / "runs.md").read_text().count("\n") == 10
    for i in range(2):
        own = [json.loads(line) for line in (workdir / f"runs.process-{i}-of-2.jsonl").open()]
        assert [row["run_id"] for row in own] == [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert [(p["process"], p["runs"], p["state_devices"]) for p in summary["points"]] == [
        (0, 4, 2),
        (1, 4, 2),
    ]
    assert (workdir / "heatmap_forget_bias_learning_rate.png").stat().st_size > 1000
    best = lambda d: json.loads((d / "best_run" / "best.json").read_text())["run_id"]
    assert best(workdir) == best(single)
    assert not list(workdir.glob("best_run.process-*"))
    with pytest.raises(ConfigError, match=r"--run: expected a sweep trained in one process"):
        restore_run(workdir, run=0)  # its runs' checkpoints are per process


# --- interrupted and resumed: per process, and on another mesh ---------------------------


def child_resume(workdir: Path, devices: str, process_id: int, port: int):
    """Stops after the first chunk on a mesh of the first ``devices[0]``
    devices, resumes on ``devices[1]`` of them."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 4 if port == 0 else 2)
    from recurrent_jax import distributed as dist
    from recurrent_jax.sweep import parse_sweep, run_sweep
    from recurrent_jax.train import config_files

    if port:
        dist.initialize(f"localhost:{port}", 2, process_id)
    config = config_files.apply_overrides(
        config_files.load_config("adding_sweep:smoke"), [("training.num_steps", "20")]
    )
    config = config.to_dict()
    config["sweep"]["runs_per_call"] = 4 if port == 0 else 0  # chunked on 4, then 3 devices
    plan = parse_sweep(config)
    first, second = (int(n) for n in devices.split(","))
    mesh = lambda n: dist.make_mesh(devices=jax.local_devices()[:n])
    stopped = run_sweep(plan, workdir, progress=False, mesh=mesh(first), should_stop=bool)
    assert stopped["status"] == "interrupted", stopped
    assert run_sweep(plan, workdir, progress=False, mesh=mesh(second))["status"] == "completed"


def _resume(workdir: Path, devices: str, processes: int):
    port = _free_port() if processes == 2 else 0
    procs = [
        _spawn("-c", _RESUME, str(workdir), devices, str(i), str(port)) for i in range(processes)
    ]
    _wait(*procs)


_RESUME = (
    f"import sys; from pathlib import Path; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    "from test_sweep_distributed import child_resume; "
    "child_resume(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
)


@pytest.mark.slow
@pytest.mark.parametrize("processes, devices", [(1, "4,3"), (2, "2,1")])
def test_interrupted_sweep_resumes_per_process_on_another_mesh(
    single, tmp_path, processes, devices
):
    """Checkpoints hold the runs without padding, per process: 8 runs
    stopped on 4 devices resume on 3 (padded to 9; chunks of 4, then 3);
    two processes stopped on 2 devices each resume on 1."""
    workdir = tmp_path / "sweep"
    _resume(workdir, devices, processes)
    _assert_same_table(_table(workdir), _table(single))
    _assert_same_metrics(workdir, single)


# --- in-process: merging the processes' files -----------------------------------------


def test_merged_metrics_are_in_the_order_one_process_writes(tmp_path):
    """Two processes' records (runs 0-1 and 2-3 of each of 2 grid points)
    merge into one process's order: point, step, train before eval, run id."""
    from recurrent_jax.sweep import parse_sweep
    from recurrent_jax.sweep.processes import merge_metrics

    config = {**_smoke_dict(), "sweep": {"vmap": {"learning_rate": [0.1, 0.2]}, "seeds": 2}}
    config["sweep"]["grid"] = {"model": {"hidden_size": [4, 8]}}
    plan = parse_sweep(config)
    assert [[r.run_id for r in p.runs] for p in plan.points] == [[0, 1, 2, 3], [4, 5, 6, 7]]

    steps = ((0, "eval"), (10, "train"), (10, "eval"))
    parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path, own in zip(parts, ([[0, 1], [4, 5]], [[2, 3], [6, 7]]), strict=True):
        records = [
            {"run_id": i, "step": step, "split": split}
            for point in own
            for step, split in steps
            for i in point
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    merge_metrics(plan, parts[::-1], tmp_path / "metrics.jsonl")
    merged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    want = [
        (run_id, step, split)
        for point in (0, 1)
        for step, split in steps
        for run_id in range(4 * point, 4 * point + 4)
    ]
    assert [(r["run_id"], r["step"], r["split"]) for r in merged] == want


def _smoke_dict() -> dict:
    from recurrent_jax.train import config_files

    return config_files.load_config("adding:smoke").to_dict()


def test_process_paths_name_every_process(tmp_path):
    from recurrent_jax import distributed as dist

    assert dist.process_paths(tmp_path / "runs.jsonl") == [tmp_path / "runs.jsonl"]
    assert dist.process_path(tmp_path / "runs.jsonl", 0) == tmp_path / "runs.jsonl"


def test_mesh_flags_need_enough_local_devices(capsys):
    from recurrent_jax import cli

    assert cli.sweep_mesh(None, None) is None  # one device: no mesh
    assert cli.sweep_mesh(1, 1).shape == {"runs": 1, "data": 1}
    with pytest.raises(cli.ConfigError, match=r"--mesh.runs=2 x --mesh.data=1: expected at most"):
        cli.sweep_mesh(2, None)
