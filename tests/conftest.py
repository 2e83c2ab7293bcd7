"""Strict numerics and shared helpers for the tests.

Helpers for the core tests live here (imported as ``from conftest import
...``) because several test files share the cell zoo and tolerance checks.

Speed: on CPU every new shape of ``jax.random.normal`` and every
``cell.init`` costs about a second of compile, so test data and the params
of numerical tests come from NumPy; ``cell.init`` runs only where the
initialisation itself is under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

# Implicit rank promotion is an error, as in equinox's conftest; x64 stays off.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Dtype promotion stays "standard", not equinox's "strict": with bf16 params
# (param_dtype=jnp.bfloat16, dtype=None) the cells add bf16 biases to fp32
# matmul results and multiply fp32 activations by bf16 w_hr, which strict
# mode rejects (see test_cells.py::test_bf16_params_under_strict_promotion).
jax.config.update("jax_numpy_dtype_promotion", "standard")


@pytest.fixture
def key():
    """A fresh PRNG key per test."""
    return jax.random.PRNGKey(0)


@pytest.fixture
def getkey():
    """A function returning a new key on each call."""
    state = [jax.random.PRNGKey(1234)]

    def _getkey():
        state[0], sub = jax.random.split(state[0])
        return sub

    return _getkey


@pytest.fixture
def fast_key():
    """A key of JAX's "unsafe_rbg" PRNG, for the tests that only need *some*
    regulariser masks: its random bits compile several times faster on CPU
    than threefry's (the default impl is covered by the ``key`` tests)."""
    return jax.random.key(0, impl="unsafe_rbg")


@pytest.fixture
def rng():
    """A fresh NumPy generator per test, for test data."""
    return np.random.default_rng(0)


# --- the cell zoo ----------------------------------------------------------

H = 4  # hidden size of the zoo
P = 3  # projection size of the LSTMP entries
D = 3  # input size used by most tests

CELLS = {
    "elman-tanh": lambda **o: rj.cells.elman(H, **o),
    "elman-relu": lambda **o: rj.cells.elman(H, activation="relu", **o),
    "lstm": lambda **o: rj.cells.lstm(H, **o),
    "lstm-single": lambda **o: rj.cells.lstm(H, bias="single", **o),
    "lstm-none": lambda **o: rj.cells.lstm(H, bias="none", **o),
    "lstm-proj": lambda **o: rj.cells.lstm(H, proj_size=P, **o),
    "lstm-peephole": lambda **o: rj.cells.lstm(H, peephole=True, **o),
    "lstm-ln": lambda **o: rj.cells.lstm(H, layer_norm=True, **o),
    "lstm-all": lambda **o: rj.cells.lstm(H, proj_size=P, peephole=True, layer_norm=True, **o),
    "gru": lambda **o: rj.cells.gru(H, **o),
    "gru-single": lambda **o: rj.cells.gru(H, bias="single", **o),
    "gru-none": lambda **o: rj.cells.gru(H, bias="none", **o),
    "gru-before": lambda **o: rj.cells.gru(H, reset_after=False, **o),
    "gru-before-single": lambda **o: rj.cells.gru(H, reset_after=False, bias="single", **o),
    "mgu": lambda **o: rj.cells.mgu(H, **o),
}

# A smaller set covering every family and option, for the engine matrices.
FAMILIES = ["elman-tanh", "lstm", "lstm-all", "gru", "gru-before", "mgu"]

_KEY_SHAPE = jax.ShapeDtypeStruct((2,), jnp.uint32)


def param_shapes(cell, input_size=D):
    """The params' ShapeDtypeStructs, without running (or compiling) init."""
    return jax.eval_shape(lambda k: cell.init(k, input_size), _KEY_SHAPE)


def random_params(cell, rng, input_size=D):
    """Params of the cell's structure with random values away from every
    default: N(0, 0.5²) weights, biases, peepholes; LayerNorm scales 1 ± 0.3."""

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        base, scale = (1.0, 0.3) if "scale" in name else (0.0, 0.5)
        return jnp.asarray(base + scale * rng.standard_normal(s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(cell, input_size))


def make(name, rng, input_size=D, **options):
    """(cell, random params) for a zoo entry."""
    cell = CELLS[name](**options)
    return cell, random_params(cell, rng, input_size)


def normal(rng, shape, scale=1.0):
    """float32 test data drawn by NumPy."""
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def random_carry(cell, rng, batch_shape, scale=0.5):
    """A nonzero carry with the structure of ``cell.initial_carry``."""
    zeros = cell.initial_carry(tuple(batch_shape))
    return jax.tree_util.tree_map(lambda a: normal(rng, a.shape, scale), zeros)


def assert_trees_close(got, want, *, atol, rtol=0.0):
    """Same tree structure, leaf shapes, and values within atol + rtol·|want|."""
    got_def = jax.tree_util.tree_structure(got)
    want_def = jax.tree_util.tree_structure(want)
    assert got_def == want_def, (got_def, want_def)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        g = np.asarray(g, np.float64)
        w = np.asarray(w, np.float64)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, atol=atol, rtol=rtol)


def auto_backend_for_plain_cells() -> str:
    """What ``impl="auto"`` runs a plain fp32 LSTM/GRU with here: the CPU
    extension on a CPU that built it, else the fused VJP."""
    from recurrent_jax import cpu

    on_cpu = jax.default_backend() == "cpu"
    return "cpu" if on_cpu and cpu.unavailable() is None else "fused"


def leaf_dtypes(tree):
    return {jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)}
