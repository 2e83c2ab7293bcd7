"""Strict numerics and the shared fixtures of the tests.

The helpers several test files share (the cell zoo, test data, tolerance
checks) are in ``_helpers.py``: ``from _helpers import make, normal``.

Speed: on CPU every new shape of ``jax.random.normal`` and every
``cell.init`` costs about a second of compile, so test data and the params
of numerical tests come from NumPy; ``cell.init`` runs only where the
initialisation itself is under test.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

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


@pytest.fixture
def x64():
    """float64 on for one test (JAX's x64 flag), then back as it was."""
    was_on = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", was_on)
