"""The studies' protocol and baselines: a learning rate picked per arm on
seeds the verdict never sees, and the UCR nearest-neighbour baselines
against a textbook DTW and the archive's published errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("matplotlib")
EXPERIMENTS = Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import _study  # noqa: E402


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_rate_prefers_solved_runs_then_the_median():
    rows = [
        {"learning_rate": 0.1, "mse": v}
        for v in (0.001, 0.2, 0.2)  # 1 solved, median 0.2
    ] + [
        {"learning_rate": 0.01, "mse": v}
        for v in (0.1, 0.1, 0.1)  # 0 solved, median 0.1
    ]
    assert _study.best_rate(rows, "mse") == 0.01
    assert _study.best_rate(rows, "mse", solved_below=0.04) == 0.1
    assert _study.best_rate(rows, "mse", higher=True) == 0.1
    diverged = [{"learning_rate": 1.0, "mse": float("nan")}] * 3
    assert _study.best_rate(rows + diverged, "mse") == 0.01


def test_select_then_decide_runs_each_arm_at_its_rate_on_fresh_seeds(tmp_path):
    from recurrent_jax.train.config import base_config, shrink_to_smoke

    config = base_config("adding", name="protocol")
    config.data.update(seq_len=5, batch_size=4, eval_size=8)
    config.model.update(hidden_size=4)
    shrink_to_smoke(config, 10)
    study = _study.Study("protocol", False, tmp_path / "out", tmp_path / "runs", "cmd", 0.0)
    arms = {"model.cell": ["gru", "lstm"], "data.seq_len": [5, 6]}
    picks = []

    def pick(rows):  # the rate whose selection runs end with the higher MSE
        picks.append({(r["model.cell"], r["seed"]) for r in rows})
        return _study.best_rate(rows, "final_mse", higher=True)

    decided = _study.select_then_decide(study, config, arms, [1e-3, 1e-1], pick, (2, 3))
    assert picks == [{("gru", 0), ("gru", 1)}, {("lstm", 0), ("lstm", 1)}]
    assert set(decided.chosen) == {("gru", 5), ("lstm", 6)}
    for key, runs in _study.group(decided.selection.rows, ["model.cell", "data.seq_len"]).items():
        by_rate = _study.group(runs, ["learning_rate"])
        medians = {lr: np.median([r["final_mse"] for r in rs]) for (lr,), rs in by_rate.items()}
        assert decided.chosen[key] == max(medians, key=medians.get)
    verdict = _study.group(decided.verdict.rows, ["model.cell", "data.seq_len"])
    for key, runs in verdict.items():
        assert sorted(r["seed"] for r in runs) == [2, 3, 4]
        assert {r["optimizer.learning_rate"] for r in runs} == {decided.chosen[key]}


def textbook_dtw(a, b) -> float:
    n, m = len(a), len(b)
    cost = np.full((n + 1, m + 1), np.inf)
    cost[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            step = (a[i - 1] - b[j - 1]) ** 2
            cost[i, j] = step + min(cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1])
    return cost[n, m]


def test_vectorised_distances_match_textbook_loops():
    ucr = load("ucr_benchmark")
    rng = np.random.default_rng(0)
    test, train = rng.normal(size=(3, 7)), rng.normal(size=(4, 7))
    expected = [[textbook_dtw(a, b) for b in train] for a in test]
    np.testing.assert_allclose(ucr.dtw(test, train), expected, rtol=1e-12)
    squared = [[((a - b) ** 2).sum() for b in train] for a in test]
    np.testing.assert_allclose(ucr.euclidean(test, train), squared, rtol=1e-12)


def test_nearest_neighbour_baselines_reproduce_the_archive():
    pytest.importorskip("aeon")
    ucr = load("ucr_benchmark")
    dataset = "ItalyPowerDemand"  # 1029 test series: the archive's 3-digit errors pin it
    for name, distance in (("1-NN ED", ucr.euclidean), ("1-NN DTW", ucr.dtw)):
        accuracy = ucr.nearest_neighbour_accuracy(dataset, distance)
        assert abs((1 - accuracy) - ucr.ARCHIVE_ERROR[dataset][name]) < 5e-4, name
