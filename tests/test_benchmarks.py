"""The benchmark suite runs end to end (tiny shapes) and reports every impl."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rnn_speed_smoke(tmp_path):
    bench = load("rnn_speed")
    out = tmp_path / "r.json"
    results = bench.main(["--smoke", "--cells", "gru", "--repeats", "1", "--json", str(out)])
    impls = {r.impl for r in results}
    assert {"rj scan u1", "rj fused u1", "rj pallas u1", "flax GRUCell"} <= impls
    assert all(r.train_ms > 0 and r.forward_ms > 0 for r in results)
    assert out.read_text().startswith("[")


def test_sweep_throughput_smoke(tmp_path):
    import json

    bench = load("sweep_throughput")
    out = tmp_path / "s.json"
    results = bench.main(["--smoke", "--json", str(out)])
    assert [r.runs for r in results] == bench.SMOKE_RUNS
    assert all(r.vmapped_steps_per_s > 0 and r.sequential_steps_per_s > 0 for r in results)
    assert all(r.ratio == r.vmapped_steps_per_s / r.sequential_steps_per_s for r in results)
    report = json.loads(out.read_text())
    assert [r["runs"] for r in report["results"]] == bench.SMOKE_RUNS
    chunked = bench.main(
        ["--smoke", "--runs", "2", "--chunk-size", "1", "--baseline", "step", "--impl", "pallas"]
    )
    assert [r.runs_per_call for r in chunked] == [1] and chunked[0].vmapped_steps_per_s > 0
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--chunk-size", "0"])


def test_cpu_step_smoke(tmp_path):
    bench = load("cpu_step")
    rows = bench.main(["--smoke", "--cells", "lstm", "--json", str(tmp_path / "c.json")])
    impls = {r["impl"] for r in rows}
    assert {"rj auto", "rj fused", "flax OptimizedLSTMCell"} <= impls
    assert all(r["train_ms"] > 0 and r["forward_ms"] > 0 for r in rows)


def test_cpu_step_growth_smoke(tmp_path):
    bench = load("cpu_step")
    rows = bench.main(["--smoke", "--growth", "--json", str(tmp_path / "g.json")])
    assert [r["shape"][1] for r in rows] == [16, 64]
    assert all(r["train_ms"]["rj auto"] > 0 and r["train_ms"]["torch"] > 0 for r in rows)


def test_packing_smoke(tmp_path):
    bench = load("packing")
    results = bench.main(["--smoke", "--json", str(tmp_path / "p.json")])
    by_layout = {r["layout"]: r for r in results}
    assert {"padded", "bucketed", "packed"} <= set(by_layout)
    assert by_layout["packed"]["slots"] <= by_layout["bucketed"]["slots"]
    assert by_layout["bucketed"]["slots"] <= by_layout["padded"]["slots"]
    assert all(r["ms"] > 0 for r in results)


def test_heads_smoke():
    bench = load("heads")
    results = bench.main(["--smoke"])
    assert [r["heads"] for r in results] == ["dense", 1, 4, 16]
    dense, *heads = results
    assert heads[0]["recurrent_params"] == dense["recurrent_params"]  # one head: the dense W_hh
    assert [r["recurrent_params"] for r in heads] == [4 * 32 * 32 // n for n in (1, 4, 16)]


def test_stream_vs_memory_smoke(tmp_path):
    pytest.importorskip("grain")
    bench = load("stream_vs_memory")
    results = bench.main(["--smoke", "--json", str(tmp_path / "s.json")])
    assert set(results["ms_per_call"]) == {"memory", "stream"}
    assert results["stream_over_memory"] > 0


@pytest.mark.slow
def test_tpu_scan_smoke(tmp_path):
    """The kernel interpreted on CPU: a cell checked, every solver timed on
    every form of coefficients."""
    bench = load("tpu_scan")
    results = bench.main(["--smoke", "--rounds", "1", "--json", str(tmp_path / "t.json")])
    assert [r["cell"] for r in results["cells"]] == list(bench.CELLS)[:1]
    assert all(r["difference"] < 1e-5 for r in results["cells"])
    assert {(r["form"], r["solver"]) for r in results["solvers"]} == {
        (form, solver) for form in bench.FORMS for solver in bench.SOLVERS
    }
    assert all(r["max_abs_error"] < 1e-5 and r["train_ms"] > 0 for r in results["solvers"])


def test_ssm_speed_smoke(tmp_path):
    """Each backend of the table is timed; "auto" is the row of what it picks
    (the scan on CPUs), not timed twice; peers are left out when absent."""
    bench = load("ssm_speed")
    rows = bench.main(["--smoke", "--cells", "lru", "--json", str(tmp_path / "s.json")])
    by_impl = {r["impl"]: r for r in rows}
    assert list(by_impl)[:4] == ["rj scan", "rj associative", "rj chunked", "rj auto"]
    assert all(r["train_ms"] > 0 and r["forward_ms"] > 0 for r in rows)
    assert by_impl["rj auto"]["auto_picks"] == "scan"
    assert by_impl["rj auto"]["train_ms"] == by_impl["rj scan"]["train_ms"]
    ratios = bench.ratio_rows(rows)
    assert ratios[0][:2] == ["lru", "2,32,8,4"] and ratios[0][3].endswith("x")
    # s4d: "auto" takes the convolution; --impls leaves the parallel scans out
    rows = bench.main(["--smoke", "--cells", "s4d", "--impls", "scan", "fft"])
    by_impl = {r["impl"]: r for r in rows}
    assert list(by_impl)[:3] == ["rj scan", "rj fft", "rj auto"]
    assert by_impl["rj auto"]["auto_picks"] == "fft"
    # s6: "auto" takes the selective scan
    rows = bench.main(["--smoke", "--cells", "s6", "--impls", "scan", "selective"])
    by_impl = {r["impl"]: r for r in rows}
    assert list(by_impl)[:3] == ["rj scan", "rj selective", "rj auto"]
    assert by_impl["rj auto"]["auto_picks"] == "selective"


def test_parallel_speed_recurrence_smoke():
    """The bare recurrence's four solvers agree with the scan (checked inside)
    and each is timed forward and in the gradient."""
    import sys

    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    bench = load("parallel_speed")
    h0 = jnp.zeros((2, 3))
    a = jnp.full((64, 2, 3), 0.9)
    b = jnp.ones((64, 2, 3))
    np.testing.assert_allclose(bench.two_level(a, b, h0, 8), bench._sequential(a, b, h0), rtol=1e-5)
    ms = bench.recurrence_times((512, 2, 3), rounds=1)  # 4 blocks of 128
    assert set(ms) == {(s, k) for s in bench.RECURRENCE_SOLVERS for k in ("forward", "gradient")}
    assert all(v > 0 for v in ms.values())
