"""The cells of ``experiments/state_space_memory.py``: each reads the GLU
encoding of its inputs, and the parameter counts it compares are matched.

Oracles: the plain cell (``rj.cells.*``, sequential scan) run on inputs
encoded in float64 NumPy from the equation ``e = (x W_a + b_a) ⊙ σ(x W_g +
b_g)``; superposition for the claim that a bare linear cell is affine in
its inputs; brute force over neighbouring sizes for the matching."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import recurrent_jax as rj

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import _encoded_cells  # noqa: E402

CELLS = ["lstm", "gru", "lru", "s5", "s6", "linoss"]
PLAIN = {
    "lstm": lambda h: rj.cells.lstm(h),
    "gru": lambda h: rj.cells.gru(h),
    "lru": lambda h: rj.cells.lru(h),
    "s5": lambda h: rj.cells.s5(h, state_size=2 * h, blocks=1),
    "s6": lambda h: rj.cells.s6(h),
    "linoss": lambda h: rj.cells.linoss(h, state_size=h),
}


def glu_numpy(params, xs):
    """e = (x W_a + b_a) ⊙ σ(x W_g + b_g), float64."""
    w, b = np.asarray(params["w_ih"], np.float64), np.asarray(params["b_enc"], np.float64)
    value, gate = np.split(np.asarray(xs, np.float64) @ w + b, 2, axis=-1)
    return value / (1.0 + np.exp(-gate))


@pytest.mark.parametrize("name", CELLS)
def test_encoded_cell_is_the_plain_cell_on_glu_features(name):
    rng = np.random.default_rng(0)
    cell = getattr(_encoded_cells, name)(6)
    params = cell.init(jax.random.key(1), 2)
    params["b_enc"] = rng.normal(size=params["b_enc"].shape).astype(np.float32)  # not zeros
    xs = rng.uniform(size=(3, 7, 2)).astype(np.float32)
    carry, ys = rj.unroll(cell, params, xs, impl="scan")
    plain = {k: v for k, v in params.items() if k not in ("w_ih", "b_enc", "w_cell")}
    plain["w_ih"] = params["w_cell"]
    encoded = glu_numpy(params, xs).astype(np.float32)
    carry_ref, ys_ref = rj.unroll(PLAIN[name](6), plain, encoded, impl="scan")
    # float32 end to end; the only difference is where the GLU is rounded
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    for leaf, ref in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_ref), strict=True):
        np.testing.assert_allclose(leaf, ref, rtol=1e-5, atol=1e-6)
    assert cell.cudnn_kernel is None  # the CPU kernel would project the raw inputs


def superposition_gap(cell, params, seed: int = 1) -> float:
    """max |f(0.3 x1 + 0.7 x2) − 0.3 f(x1) − 0.7 f(x2)| of the last output f."""
    rng = np.random.default_rng(seed)
    x1, x2 = (rng.uniform(size=(2, 9, 2)).astype(np.float32) for _ in range(2))

    def last(xs):
        return np.asarray(rj.unroll(cell, params, xs, impl="scan")[1][:, -1], np.float64)

    return float(np.max(np.abs(last(0.3 * x1 + 0.7 * x2) - 0.3 * last(x1) - 0.7 * last(x2))))


def test_a_bare_linear_cell_is_affine_and_the_encoded_one_is_not():
    """Why the study encodes: the bare LRU's last output obeys superposition
    (so it cannot form v·m); behind the encoder it does not."""
    bare = rj.cells.lru(5)
    assert superposition_gap(bare, bare.init(jax.random.key(2), 2)) < 1e-5  # fp32 rounding
    encoded = _encoded_cells.lru(5)
    params = encoded.init(jax.random.key(2), 2)
    params["b_enc"] = np.random.default_rng(3).normal(size=params["b_enc"].shape)
    assert superposition_gap(encoded, params) > 1e-3


def test_matched_sizes_are_the_nearest_counts_within_three_percent():
    path = EXPERIMENTS / "state_space_memory.py"
    spec = importlib.util.spec_from_file_location("state_space_memory", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    target = study.num_params("lstm", study.LSTM_SIZE)
    for name in ("gru", "s6"):  # a quadratic and a linear count in H
        size = study.matched_size(name, target)
        near = {h: study.num_params(name, h) for h in range(size - 3, size + 4)}
        assert min(near, key=lambda h: abs(near[h] - target)) == size  # brute force
        assert abs(near[size] - target) <= 0.03 * target
